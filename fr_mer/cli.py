"""The ``fr-mer`` command line: a thin layer over the library.

Each command lives in ``fr_mer/commands/<name>.py`` and calls library
functions; errors the user can fix are raised as ``click.ClickException`` with
a message that names the file and what to do. A command's module is imported
only when that command runs, so ``fr-mer scan`` does not pay for importing
torch (seconds on a busy machine).
"""
from __future__ import annotations

import importlib

import click

from fr_mer import __version__

#: Command name -> module under fr_mer.commands that defines ``command``, in the order --help lists them.
COMMANDS = {
    "scan": "scan",
    "preprocess": "preprocess",
    "synth": "synth",
    "demo": "demo",
    "train": "train",
    "evaluate": "evaluate",
    "import-ststnet": "import_ststnet",
    "predict": "predict",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"fr_mer.commands.{COMMANDS[name]}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fr-mer")
def main() -> None:
    """fr-mer: facial micro-expression recognition (CASME II, SAMM, SMIC-HS, MEGC2019)."""


if __name__ == "__main__":  # pragma: no cover
    main()
