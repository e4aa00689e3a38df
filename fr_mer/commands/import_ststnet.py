"""`fr-mer import-ststnet` (being written; the owner replaces this module)."""
import click


@click.command("import-ststnet")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer import-ststnet is not available in this build")
