"""The ``fr-mer`` command line: a thin layer over the library.

Each command lives in ``fr_mer/commands/<name>.py`` and calls library
functions; errors the user can fix are raised as ``click.ClickException`` with
a message that names the file and what to do.
"""
from __future__ import annotations

import click

from fr_mer import __version__
from fr_mer.commands import (
    demo,
    evaluate,
    import_ststnet,
    predict,
    preprocess,
    scan,
    synth,
    train,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fr-mer")
def main() -> None:
    """fr-mer: facial micro-expression recognition (CASME II, SAMM, SMIC-HS, MEGC2019)."""


for module in (scan, preprocess, synth, demo, train, evaluate, import_ststnet, predict):
    main.add_command(module.command)


if __name__ == "__main__":  # pragma: no cover
    main()
