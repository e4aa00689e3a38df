"""`fr-mer train` (being written; the owner replaces this module)."""
import click


@click.command("train")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer train is not available in this build")
