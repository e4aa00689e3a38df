"""`fr-mer predict` (being written; the owner replaces this module)."""
import click


@click.command("predict")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer predict is not available in this build")
