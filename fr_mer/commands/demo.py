"""`fr-mer demo` (being written; the owner replaces this module)."""
import click


@click.command("demo")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer demo is not available in this build")
