"""`fr-mer evaluate` (being written; the owner replaces this module)."""
import click


@click.command("evaluate")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer evaluate is not available in this build")
