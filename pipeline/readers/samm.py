"""SAMM: ``SAMM/006/006_1_2/006_05562.jpg`` (``{subject}_{frame:05d}.jpg``) annotated by
``SAMM_Micro_FACS_Codes_v2.xlsx``, sheet ``MICRO_ONLY``, header on row 14.
"""
from __future__ import annotations

import re
from pathlib import Path

from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.labels import canonical_subject
from fr_mer.pipeline.readers.common import SubjectFolders, find_subject_folders, read_annotated_release

DATASET = "samm"

SHEET = "MICRO_ONLY"

#: Header texts on row 14 (rows 1-13 are notes; the header is found, not assumed).
COLUMNS = {
    "subject": ("Subject",),
    "filename": ("Filename",),
    "inducement": ("Inducement Code",),
    "onset": ("Onset Frame",),
    "apex": ("Apex Frame",),
    "offset": ("Offset Frame",),
    "duration": ("Duration",),
    "micro": ("Micro",),
    "action_units": ("Action Units",),
    "emotion": ("Estimated Emotion",),
    "objective": ("Objective Classes",),
    "notes": ("Notes",),
}
REQUIRED = ("subject", "filename", "onset", "apex", "offset", "emotion")

ANNOTATION_PATTERN = re.compile(r"^samm.*(facs|codes).*\.(xlsx|xlsm|csv)$", re.IGNORECASE)
ANNOTATION_EXAMPLE = "SAMM_Micro_FACS_Codes_v2.xlsx"

_SUBJECT = re.compile(r"\d{3}")


def _holds_clips(folder: Path) -> bool:
    """A SAMM subject folder holds clip folders named after it (``006/006_1_2``)."""
    prefix = f"{folder.name}_"
    try:
        return any(p.is_dir() and p.name.startswith(prefix) for p in folder.iterdir())
    except OSError:
        return False


def subject_folders(root: Path | str) -> SubjectFolders:
    """Three-digit subject folders (``006``) holding ``006_*`` clip folders, below ``root``."""
    return find_subject_folders(
        root,
        DATASET,
        pattern=_SUBJECT,
        canonical=lambda name: canonical_subject(DATASET, name),
        accept=_holds_clips,
        example="006, 007, ...",
    )


def read(root: Path | str, annotations: Path | str | None = None) -> list[Clip]:
    """One :class:`Clip` per MICRO_ONLY row, in row order (rules: docs/datasets.md)."""
    return read_annotated_release(
        DATASET,
        root,
        annotations,
        subject_folders=subject_folders,
        columns=COLUMNS,
        required=REQUIRED,
        sheets=(SHEET,),
        annotation_pattern=ANNOTATION_PATTERN,
        annotation_example=ANNOTATION_EXAMPLE,
    )
