"""`fr-mer preprocess` (being written; the owner replaces this module)."""
import click


@click.command("preprocess")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer preprocess is not available in this build")
