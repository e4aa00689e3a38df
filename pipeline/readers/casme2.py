"""CASME II: ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`` (or ``Cropped/.../reg_img46.jpg``)
annotated by ``CASME2-coding-20140508.xlsx`` or ``CASME2-coding-20190701.xlsx``.
"""
from __future__ import annotations

import re
from pathlib import Path

from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.labels import canonical_subject
from fr_mer.pipeline.readers.common import SubjectFolders, find_subject_folders, read_annotated_release

DATASET = "casme2"

#: Sheet of both coding files.
SHEET = "Sheet1"

#: Header texts (matched ignoring case, spaces and punctuation). Header row 1:
#: Subject, Filename, (blank), OnsetFrame, ApexFrame, OffsetFrame, (blank),
#: Action Units, Estimated Emotion[, Objective Classes in 20190701].
COLUMNS = {
    "subject": ("Subject",),
    "filename": ("Filename",),
    "onset": ("OnsetFrame",),
    "apex": ("ApexFrame",),
    "offset": ("OffsetFrame",),
    "action_units": ("Action Units",),
    "emotion": ("Estimated Emotion",),
    "objective": ("Objective Classes",),
}
REQUIRED = ("subject", "filename", "onset", "apex", "offset", "emotion")

ANNOTATION_PATTERN = re.compile(r"^casme.?2.*coding.*\.(xlsx|xlsm|csv)$", re.IGNORECASE)
ANNOTATION_EXAMPLE = "CASME2-coding-20140508.xlsx or CASME2-coding-20190701.xlsx"

_SUBJECT = re.compile(r"sub\d+", re.IGNORECASE)


def _has_subfolder(folder: Path) -> bool:
    try:
        return any(p.is_dir() for p in folder.iterdir())
    except OSError:
        return False


def subject_folders(root: Path | str) -> SubjectFolders:
    """``subNN`` folders (holding clip folders) anywhere below ``root``."""
    return find_subject_folders(
        root,
        DATASET,
        pattern=_SUBJECT,
        canonical=lambda name: canonical_subject(DATASET, name),
        accept=_has_subfolder,
        example="sub01, sub02, ...",
    )


def read(root: Path | str, annotations: Path | str | None = None) -> list[Clip]:
    """One :class:`Clip` per coding-sheet row, in row order (rules: docs/datasets.md)."""
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
        emotion=str.lower,
    )
