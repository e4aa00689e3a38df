"""The ``fr-mer`` command line: a thin layer over the library.

Each command lives in ``fr_mer/commands/<name>.py`` and calls library
functions. Errors are handled here, once, for every command
(:mod:`fr_mer.errors`): a :class:`~fr_mer.errors.FrMerError` (and an ``OSError``
about a named file: missing, no permission, disk full) is printed as one line,
exit 1; click's usage errors exit 2; anything else is a bug, printed with its
traceback and a request to report it, exit 3.

Start-up rule: a command's module is imported only when that command runs, and
the modules of ``scan``, ``preprocess`` and ``synth`` never import torch, so
those commands do not pay for it (seconds on a busy machine).
"""
from __future__ import annotations

import importlib
import traceback

import click

from fr_mer import __version__
from fr_mer.errors import EXIT_BUG, FrMerError

#: Command name -> module under fr_mer.commands that defines ``command``, in the order --help lists them.
COMMANDS = {
    "scan": "scan",
    "preprocess": "preprocess",
    "synth": "synth",
    "demo": "demo",
    "train": "train",
    "evaluate": "evaluate",
    "probe": "probe",
    "import-ststnet": "import_ststnet",
    "predict": "predict",
    "compare": "compare",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"fr_mer.commands.{COMMANDS[name]}").command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except FrMerError as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            if error.filename is None:
                _report_bug(ctx)
            where = error.filename if error.filename2 is None else f"{error.filename} -> {error.filename2}"
            raise click.ClickException(f"{where}: {error.strerror or error}") from None
        except Exception:
            _report_bug(ctx)


def _report_bug(ctx: click.Context) -> None:
    traceback.print_exc()
    click.echo("fr-mer: this is a bug in fr-mer, not in your input; please report it with the traceback above "
               "and the command you ran.", err=True)
    ctx.exit(EXIT_BUG)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fr-mer")
def main() -> None:
    """fr-mer: facial micro-expression recognition (CASME II, SAMM, SMIC-HS, MEGC2019)."""


if __name__ == "__main__":  # pragma: no cover
    main()
