"""The one base of fr-mer's expected failures, and how the command line shows them.

Every failure a user can fix (a missing or malformed file, a setting out of range,
a run that cannot resume) raises a subclass of :class:`FrMerError` whose message
names the file (and row) or option and says what to do. The command line
(:mod:`fr_mer.cli`) prints such a message on one line and exits 1; click's usage
errors exit 2; any other exception is a bug: its traceback is kept and a line asks
for a report (exit 3).

Subclasses live beside the code that raises them (``CacheError`` in the cache
module, ``DatasetError`` in the readers, ...). Several also derive from
``ValueError`` or ``RuntimeError`` so that library callers who caught those before
keep working.
"""
from __future__ import annotations

#: Exit status of the command line for an expected failure, a usage error and a bug.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 3


class FrMerError(Exception):
    """An expected failure; ``str(error)`` is the whole message for the user."""


class ParameterError(FrMerError, ValueError):
    """A setting out of its range or not one of its choices (an option, a recorded config)."""
