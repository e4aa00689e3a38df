"""The bounds of the numbers a user gives, and the one check of a number: the home of both.

Every number that reaches fr-mer (an option, a recorded setting, a cell of a
spreadsheet) is checked before any work: a number (not NaN, not infinite), in its
range, and below an upper bound wherever memory or time grows with it, so that no
value ends in a segfault, a traceback or a machine that swaps for minutes.
click options take their ranges from the constants below (usage errors, exit 2);
settings call :func:`check_number` in their ``__post_init__``
(:class:`~fr_mer.errors.ParameterError`, exit 1). Imports neither torch nor numpy.
"""
from __future__ import annotations

import math
import numbers

from fr_mer.errors import ParameterError

#: CPU threads of torch (--threads, --flow-threads): torch's pool is created with them, and
#: far beyond the cores it exhausts the process's threads (a segfault with 100000).
MAX_THREADS = 1024
#: Worker processes (--jobs of preprocess, evaluate, probe and demo).
MAX_JOBS = 1024
#: Pairs per batch of the torch TV-L1 (--flow-batch): memory grows with them.
MAX_FLOW_BATCH = 65536
#: Seeds (a seed's value; and how many one run takes: the run's memory and time grow with them).
MAX_SEED = 2**31 - 1
MAX_SEEDS = 1000
#: Folds trained as one stacked model (--fold-batch; more than any protocol has).
MAX_FOLD_BATCH = 10_000
#: Training epochs and batch size of a recipe.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
#: Synthetic subjects per database and clips per subject (synth, demo).
MAX_SYNTH_SUBJECTS = 1000
MAX_SYNTH_CLIPS = 1000
#: Bootstrap resamples of compare (memory and time grow with them).
MAX_BOOTSTRAP = 100_000
#: Side in pixels of a synthetic frame (synth --size): memory grows with its square.
MAX_FRAME_SIDE = 4096
#: Side in pixels of every square image preprocessing makes (--flow-size, --feature-size, --face-size,
#: --clip-size, --di-size), also when read back from a cache or a checkpoint.
MAX_IMAGE_SIDE = 1024
#: Frames of a clip input, segments of a dynamic image.
MAX_CLIP_FRAMES = 1024
#: Cells a spreadsheet's declared extent may cover (rows x columns): a small .xlsx whose one
#: cell sits at column XFD on row 20,000 would otherwise become a 300-million-cell table.
MAX_SHEET_CELLS = 5_000_000
#: Digits of a whole number in a spreadsheet cell (a frame number, a subject): Python's int()
#: refuses longer strings with a ValueError that names no cell.
MAX_CELL_DIGITS = 18
#: Bytes an ``--audit-selection`` run's per-epoch archive may unpack to (fr_mer.epoch_archive): a
#: composite run of 10 seeds, 800 epochs and 7 classes unpacks to about 0.06 GiB; a damaged or hostile
#: file that declares more is refused before it is read.
MAX_EPOCH_ARCHIVE_BYTES = 2**31


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False) -> None:
    """Raise :class:`ParameterError` naming ``name`` unless ``value`` is a finite number (an integer when
    ``integer``; never a bool) in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    kind = "an integer" if integer else "a finite number"
    wanted = numbers.Integral if integer else numbers.Real
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    expected = f"{name} must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, wanted) or not math.isfinite(value):
        raise ParameterError(expected)
    if low is not None and (value <= low if low_open else value < low):
        raise ParameterError(expected)
    if high is not None and value > high:
        raise ParameterError(expected)
