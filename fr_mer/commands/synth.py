"""`fr-mer synth` (being written; the owner replaces this module)."""
import click


@click.command("synth")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("fr-mer synth is not available in this build")
