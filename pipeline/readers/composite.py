"""The MEGC2019 composite list mapped onto the user's copies of the three databases.

The list names clips in its own id formats (``sub01``, ``6``, ``s01``/``s01_ne_01``);
``pipeline.composite.read_composite_list`` makes them canonical, and here each
row is matched to the clip the database reader found. The label comes from the
list (it is the protocol); the emotion from the spreadsheet where there is one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from fr_mer.pipeline.clips import UNUSABLE, Clip
from fr_mer.pipeline.composite import CompositeEntry
from fr_mer.pipeline.labels import DATABASE_TITLES, DATABASES
from fr_mer.pipeline.readers.discovery import DatasetNotFoundError


def resolve(
    entries: list[CompositeEntry],
    roots: Mapping[str, Path | str | None],
    annotations: Mapping[str, Path | str | None],
    *,
    read_database: Callable[..., list[Clip]],
    smic_apex: str = "middle",
    absent_ok: Collection[str] = (),
    source: str = "",
    objective: Mapping[str, Path | str | None] | None = None,
) -> list[Clip]:
    """One clip per list row, in list order; see :func:`pipeline.readers.resolve_composite`."""
    needed = [d for d in DATABASES if any(e.dataset == d for e in entries)]
    found: dict[str, dict[tuple[str, str], Clip]] = {}
    searched: dict[str, str] = {}
    absent: dict[str, str] = {}
    for dataset in needed:
        root = roots.get(dataset)
        if root is None:
            absent[dataset] = f"no {DATABASE_TITLES[dataset]} root given (fr-mer: --{dataset}-root)"
            continue
        try:
            clips = read_database(dataset, root, annotations.get(dataset), smic_apex=smic_apex,
                                  objective=(objective or {}).get(dataset))
        except DatasetNotFoundError as error:
            if dataset not in absent_ok:
                raise
            absent[dataset] = str(error)
            continue
        index: dict[tuple[str, str], Clip] = {}
        for clip in clips:
            index.setdefault((clip.subject, clip.clip.lower()), clip)
        found[dataset] = index
        sheets = sorted({c.source for c in clips if c.row is not None})
        searched[dataset] = (
            f"has no row in {', '.join(sheets)}" if sheets else f"has no clip folder under {root}"
        )

    resolved: list[Clip] = []
    for entry in entries:
        if entry.dataset in absent:
            resolved.append(_missing(entry, absent[entry.dataset], source))
            continue
        clip = found[entry.dataset].get((entry.subject, entry.clip.lower()))
        if clip is None:
            reason = f"{entry.subject}/{entry.clip} {searched[entry.dataset]}"
            resolved.append(_missing(entry, reason, source))
            continue
        copy = dataclasses.replace(clip, frames=dict(clip.frames))
        if clip.label != entry.label:
            spelled = f"emotion {clip.emotion!r}" if clip.emotion else "no emotion"
            derived = clip.label or "no composite class"
            copy.problem = "; ".join(
                p for p in (
                    copy.problem,
                    f"note: {spelled} gives {derived}; the list's label {entry.label} is used",
                ) if p
            )
        copy.label = entry.label
        resolved.append(copy)
    return resolved


def _missing(entry: CompositeEntry, reason: str, source: str) -> Clip:
    return Clip(
        dataset=entry.dataset,
        subject=entry.subject,
        clip=entry.clip,
        emotion="",
        label=entry.label,
        onset_frame=None,
        apex_frame=None,
        offset_frame=None,
        status=UNUSABLE,
        problem=reason,
        apex_rule="",
        source=source,
        row=entry.row,
    )
