"""The command-line helpers the hostile-input tests share: run a command, and check a refusal."""
from __future__ import annotations

from click.testing import CliRunner

from fr_mer.cli import main


def run(*args):
    """``fr-mer ARGS`` in-process (click's runner); every argument passed as text."""
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, status, *names):
    """The command exited ``status`` with a message naming each of ``names``, and no traceback."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output and "this is a bug" not in result.output, result.output
    for name in names:
        assert str(name) in result.output, (name, result.output)
