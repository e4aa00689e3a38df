"""`fr-mer scan` (being written; the owner replaces this module)."""
import click


@click.command("scan")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer scan is not available in this build")
