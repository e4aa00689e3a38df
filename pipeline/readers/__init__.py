"""Readers of CASME II, SAMM and SMIC-HS as released, and of the MEGC2019 composite list.

Every reader returns :class:`pipeline.clips.Clip` records: one per annotated
clip (SMIC: per clip folder), canonical subject ids (``sub01``, ``006``,
``s01``), SMIC clip ids canonical (``s01_ne_01``), ``frames`` = the onset..offset
files sorted by number. Rows are never dropped: a row that cannot be used
comes back ``unusable`` with the reason, a row fixed by a rule comes back
``repaired`` with what was done (docs/datasets.md lists the rules).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.composite import CompositeEntry
from fr_mer.pipeline.labels import DATABASES
from fr_mer.pipeline.readers import casme2, samm, smic
from fr_mer.pipeline.readers import composite as _composite
from fr_mer.pipeline.readers.common import (
    TITLES,
    DatasetError,
    DatasetNotFoundError,
    SubjectFolders,
    unannotated_folders,
)
from fr_mer.pipeline.readers.smic import SMIC_APEX_RULES

__all__ = [
    "DATASET_TITLES",
    "DatasetError",
    "DatasetNotFoundError",
    "SMIC_APEX_RULES",
    "read_database",
    "resolve_composite",
    "subject_folders",
    "unannotated_clip_folders",
]

_MODULES = {"casme2": casme2, "samm": samm, "smic": smic}

#: Database names in messages (``CASME II``, ``SAMM``, ``SMIC-HS``).
DATASET_TITLES = TITLES


def _check_dataset(dataset: str) -> None:
    if dataset not in DATABASES:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATABASES)}")


def read_database(
    dataset: str,
    root: Path | str,
    annotations: Path | str | None = None,
    *,
    smic_apex: str = "middle",
) -> list[Clip]:
    """Every annotated clip of one database, resolved to its frame files.

    ``dataset``: ``casme2``, ``samm`` or ``smic``. ``root``: the release's top
    folder or any folder above the subject folders (they are searched for).
    ``annotations``: the coding spreadsheet (.xlsx or a .csv export); None
    looks for it beside the release (CASME II, SAMM); SMIC has none and takes
    none. ``smic_apex``: ``middle`` (the middle frame, ``apex_rule='middle'``)
    or ``spot`` (``apex_frame=None``, ``apex_rule='spot'``: preprocessing spots
    it from the frames); ignored for CASME II and SAMM.

    Raises :class:`DatasetError` (message names the file and what to do) when
    the root or the annotation file cannot be used at all.
    """
    _check_dataset(dataset)
    smic.check_apex_rule(smic_apex)
    if dataset == "smic":
        if annotations is not None:
            raise DatasetError(
                f"{annotations}: SMIC-HS has no annotation file (clips are labelled by their "
                "folder names and have no apex annotation); leave the annotation file out"
            )
        return smic.read(root, smic_apex=smic_apex)
    return _MODULES[dataset].read(root, annotations)


def resolve_composite(
    entries: list[CompositeEntry],
    roots: Mapping[str, Path | str | None],
    annotations: Mapping[str, Path | str | None],
    *,
    smic_apex: str = "middle",
    absent_ok: Collection[str] = (),
    source: str = "",
) -> list[Clip]:
    """Map each composite-list row to the user's folders: one :class:`Clip` per row, in list order.

    ``roots``/``annotations``: per database (``casme2``, ``samm``, ``smic``), as
    :func:`read_database` takes them. The label is the list's; the emotion the
    spreadsheet's (a disagreement is noted in ``problem``). A row whose clip is
    not found, or whose database has no root, comes back unusable with the
    reason. ``absent_ok``: databases whose root may not hold them (a shared
    root for all three): their rows become unusable instead of raising
    :class:`DatasetNotFoundError`. ``source``: the list's path, for messages.
    """
    return _composite.resolve(
        entries,
        roots,
        annotations,
        read_database=read_database,
        smic_apex=smic_apex,
        absent_ok=absent_ok,
        source=source,
    )


def subject_folders(dataset: str, root: Path | str) -> SubjectFolders:
    """Where the subject folders of ``dataset`` are below ``root`` (raises DatasetError)."""
    _check_dataset(dataset)
    return _MODULES[dataset].subject_folders(root)


def unannotated_clip_folders(dataset: str, root: Path | str, clips: list[Clip]) -> list[str]:
    """``subject/clip`` folders on disk that no annotation row names (empty for SMIC)."""
    if dataset == "smic":
        return []
    return unannotated_folders(subject_folders(dataset, root), clips)
