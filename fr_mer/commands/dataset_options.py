"""The dataset inputs of ``fr-mer scan`` and ``fr-mer preprocess``: :func:`dataset_options` declares them on a
click command, :func:`scan_from_options` and :func:`clips_from_options` turn their values into clips,
:func:`dataset_inputs` names their paths for the output checks.

Torch-free, as both commands are (docs/architecture.md, start-up).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from fr_mer.errors import FrMerError
from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.readers import SMIC_APEX_RULES
from fr_mer.pipeline.scan import SCAN_DATASETS, ScanOptionsError, ScanResult, scan

F = TypeVar("F", bound=Callable)

#: Keyword names that :func:`dataset_options` adds to a command.
DATASET_OPTION_NAMES = (
    "dataset", "root", "annotations",
    "casme2_root", "casme2_annotations", "samm_root", "samm_annotations", "smic_root",
    "composite_list", "smic_apex", "casme3_root", "casme3_annotations", "casme2_objective",
)

_FOLDER = click.Path(path_type=Path, file_okay=True, dir_okay=True)
_FILE = click.Path(path_type=Path, dir_okay=False)


def dataset_options(command: F) -> F:
    """Add the dataset inputs (``--dataset``, ``--root``, ... ``--smic-apex``) to a click command.

    The command receives them as keyword arguments named in DATASET_OPTION_NAMES;
    pass them on to :func:`clips_from_options`.
    """
    options = [
        click.option("--dataset", type=click.Choice(SCAN_DATASETS), required=True,
                     help="Database to read (casme3: CAS(ME)^3 part A), or 'composite' for the "
                          "MEGC2019 composite list over CASME II, SAMM and SMIC-HS."),
        click.option("--root", type=_FOLDER, default=None,
                     help="Folder of the release (its top folder or any folder above the subject "
                          "folders; nested archives are fine). With --dataset composite: a folder "
                          "holding all three databases, used for any --*-root not given."),
        click.option("--annotations", type=_FILE, default=None,
                     help="Coding spreadsheet (.xlsx, or a .csv export of its sheet) of CASME II, "
                          "SAMM or CAS(ME)^3. Default: looked for beside the release. SMIC-HS has none."),
        click.option("--casme2-root", type=_FOLDER, default=None,
                     help="Composite: the CASME II release (CASME2_RAW_selected or Cropped, "
                          "or above)."),
        click.option("--casme2-annotations", type=_FILE, default=None,
                     help="Composite: CASME2-coding-20140508.xlsx or -20190701.xlsx "
                          "(default: looked for beside the release)."),
        click.option("--samm-root", type=_FOLDER, default=None,
                     help="Composite: the SAMM release (the folder holding 006, 007, ..., "
                          "or above)."),
        click.option("--samm-annotations", type=_FILE, default=None,
                     help="Composite: SAMM_Micro_FACS_Codes_v2.xlsx (default: looked for beside "
                          "the release)."),
        click.option("--smic-root", type=_FOLDER, default=None,
                     help="Composite: the SMIC release (SMIC_all_raw or SMIC_all_cropped, its HS "
                          "folder, or above)."),
        click.option("--composite-list", type=_FILE, default=None,
                     help="Composite list (no header: dataset, subject, filename, class). "
                          "Default: the official MEGC2019 list shipped with fr-mer."),
        click.option("--smic-apex", type=click.Choice(SMIC_APEX_RULES), default="middle",
                     show_default=True,
                     help="SMIC-HS has no apex annotation: 'middle' takes the middle frame, "
                          "'spot' leaves it to preprocessing to spot from the frames."),
        click.option("--casme3-root", type=_FOLDER, default=None,
                     help="--dataset casme3: CAS(ME)^3 part A (the folder holding spNO.1, spNO.2, ..., "
                          "or above); the same as --root."),
        click.option("--casme3-annotations", type=_FILE, default=None,
                     help="--dataset casme3: cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx or a .csv export "
                          "(default: looked for beside the release); the same as --annotations."),
        click.option("--casme2-objective", type=_FILE, default=None,
                     help="CASME II's objective-class sheet (CASME2-ObjectiveClasses.xlsx, MEGC2018), "
                          "for --dataset casme2 or composite; the table gains an objective_class column."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def scan_from_options(**kwargs: object) -> ScanResult:
    """Run :func:`pipeline.scan.scan` on the values of :func:`dataset_options`.

    Keywords other than DATASET_OPTION_NAMES are ignored, so a command may pass
    all of its own. Bad combinations raise ``click.UsageError`` (exit 2); an input
    that cannot be used raises ``click.ClickException`` (exit 1) whose message
    names the file and what to do. fr-mer's own group would print the same line
    for the library's error (``fr_mer.cli``); the conversion is here for click
    commands outside that group that reuse :func:`dataset_options`. Anything that
    is not an expected failure (a bug) passes through untouched.
    """
    values = {name: kwargs.get(name) for name in DATASET_OPTION_NAMES}
    values["smic_apex"] = values["smic_apex"] or "middle"
    dataset = values.pop("dataset")
    if dataset is None:
        raise click.UsageError("--dataset is required")
    try:
        return scan(str(dataset), **values)
    except ScanOptionsError as error:
        raise click.UsageError(str(error)) from None
    except FrMerError as error:
        raise click.ClickException(str(error)) from None


def dataset_inputs(**kwargs: object) -> dict[str, object]:
    """The input paths among the :func:`dataset_options` values, by option (for
    :func:`fr_mer.output_paths.check_output`)."""
    return {"--" + name.replace("_", "-"): kwargs.get(name) for name in DATASET_OPTION_NAMES
            if name not in ("dataset", "smic_apex")}


def clips_from_options(**kwargs: object) -> list[Clip]:
    """The clips named by the :func:`dataset_options` values (all of them, unusable ones included).

    ``fr-mer preprocess`` calls it with its own keyword arguments; see
    :func:`scan_from_options` for errors.
    """
    return scan_from_options(**kwargs).clips
