"""Readers of CASME II, SAMM and SMIC-HS as released, and of the MEGC2019 composite list.

Layout of the package: ``discovery`` finds folders and annotation files,
``repairs`` holds the named rules from an annotated row to frame files,
``releases`` describes each annotated release as data and ``annotated`` reads
any release so described; ``smic`` reads SMIC-HS's folder-labelled clips and
``composite`` maps the composite list onto what the readers found.

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
from fr_mer.pipeline.labels import check_database
from fr_mer.pipeline.readers import annotated, smic
from fr_mer.pipeline.readers import composite as _composite
from fr_mer.pipeline.readers.discovery import (
    DatasetError,
    DatasetNotFoundError,
    SubjectFolders,
    unannotated_folders,
)
from fr_mer.pipeline.readers.releases import ANNOTATED_RELEASES
from fr_mer.pipeline.readers.smic import SMIC_APEX_RULES

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "SMIC_APEX_RULES",
    "read_database",
    "resolve_composite",
    "subject_folders",
    "unannotated_clip_folders",
]


def read_database(
    dataset: str,
    root: Path | str,
    annotations: Path | str | None = None,
    *,
    smic_apex: str = "middle",
    objective: Path | str | None = None,
) -> list[Clip]:
    """Every annotated clip of one database, resolved to its frame files.

    ``dataset``: ``casme2``, ``samm``, ``smic`` or ``casme3``. ``root``: the release's top
    folder or any folder above the subject folders (they are searched for).
    ``annotations``: the coding spreadsheet (.xlsx or a .csv export); None
    looks for it beside the release (CASME II, SAMM); SMIC has none and takes
    none. ``smic_apex``: ``middle`` (the middle frame, ``apex_rule='middle'``)
    or ``spot`` (``apex_frame=None``, ``apex_rule='spot'``: preprocessing spots
    it from the frames); ignored for the annotated releases. ``objective``: CASME II's
    separate objective-class sheet (``CASME2-ObjectiveClasses.xlsx``), recorded in
    ``Clip.objective_class`` (the coding sheet's own column is read without it).

    Raises :class:`DatasetError` (message names the file and what to do) when
    the root or the annotation file cannot be used at all.
    """
    check_database(dataset)
    smic.check_apex_rule(smic_apex)
    if dataset == smic.DATASET:
        if annotations is not None:
            raise DatasetError(
                f"{annotations}: SMIC-HS has no annotation file (clips are labelled by their "
                "folder names and have no apex annotation); leave the annotation file out"
            )
        if objective is not None:
            raise DatasetError(f"{objective}: SMIC-HS has no objective classes; leave the sheet out")
        return smic.read(root, smic_apex=smic_apex)
    release = ANNOTATED_RELEASES[dataset]
    if objective is not None and release.objective_sheet is None:
        raise DatasetError(
            f"{objective}: {release.title} has no separate objective-class sheet (its coding "
            "sheet's column is read); leave the sheet out"
        )
    return annotated.read_annotated_release(release, root, annotations, objective)


def resolve_composite(
    entries: list[CompositeEntry],
    roots: Mapping[str, Path | str | None],
    annotations: Mapping[str, Path | str | None],
    *,
    smic_apex: str = "middle",
    absent_ok: Collection[str] = (),
    source: str = "",
    objective: Mapping[str, Path | str | None] | None = None,
) -> list[Clip]:
    """Map each composite-list row to the user's folders: one :class:`Clip` per row, in list order.

    ``roots``/``annotations``: per database (``casme2``, ``samm``, ``smic``), as
    :func:`read_database` takes them. The label is the list's; the emotion the
    spreadsheet's (a disagreement is noted in ``problem``). A row whose clip is
    not found, or whose database has no root, comes back unusable with the
    reason. ``absent_ok``: databases whose root may not hold them (a shared
    root for all three): their rows become unusable instead of raising
    :class:`DatasetNotFoundError`. ``source``: the list's path, for messages.
    ``objective``: per database, a separate objective-class sheet (CASME II).
    """
    return _composite.resolve(
        entries,
        roots,
        annotations,
        read_database=read_database,
        smic_apex=smic_apex,
        absent_ok=absent_ok,
        source=source,
        objective=objective,
    )


def subject_folders(dataset: str, root: Path | str) -> SubjectFolders:
    """Where the subject folders of ``dataset`` are below ``root`` (raises DatasetError)."""
    check_database(dataset)
    if dataset == smic.DATASET:
        return smic.subject_folders(root)
    return annotated.subject_folders(ANNOTATED_RELEASES[dataset], root)


def unannotated_clip_folders(dataset: str, root: Path | str, clips: list[Clip],
                             subjects: SubjectFolders | None = None) -> list[str]:
    """``subject/clip`` folders on disk that no annotation row names (empty for SMIC).

    ``subjects``: the release's subject folders when already found (else searched for).
    """
    if dataset == smic.DATASET:
        return []
    subjects = subject_folders(dataset, root) if subjects is None else subjects
    return unannotated_folders(subjects, clips, ANNOTATED_RELEASES[dataset].folder_of)
