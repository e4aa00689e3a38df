"""The record every reader produces: one annotated clip resolved to its frame files.

Readers (``pipeline.readers``) fill :class:`Clip`; ``fr-mer scan`` writes them as
a table; ``fr-mer preprocess`` turns each usable one into a cache sample.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from fr_mer.errors import FrMerError
from fr_mer.pipeline.labels import sample_key

#: Status of a clip after scanning.
OK, REPAIRED, UNUSABLE = "ok", "repaired", "unusable"

#: Image file suffixes the readers accept as frames.
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

#: Columns of the scan table, in order (the CLI contract of ``fr-mer scan``).
SCAN_COLUMNS = (
    "dataset", "subject", "clip", "emotion", "label",
    "onset_frame", "apex_frame", "offset_frame", "onset_path", "apex_path",
    "status", "problem", "n_frames", "apex_rule", "source", "row",
)
#: The column the scan table gains when some clip's objective class is known.
OBJECTIVE_COLUMN = "objective_class"


@dataclasses.dataclass
class Clip:
    """One annotated clip.

    ``frames`` maps absolute frame number -> file, for onset..offset (the files
    found on disk, sorted by number). ``apex_frame`` is None only while an apex
    is still to be spotted from the frames (SMIC with ``apex_rule='spot'``).
    ``problem`` says what is wrong (unusable) or what was repaired (repaired);
    ``source``/``row`` name the annotation file and its row for messages.
    ``objective_class``: the MEGC2018 objective class (1-7) when the annotation
    gives one (CASME II's objective sheet or 2019 coding sheet, SAMM, CAS(ME)^3).
    """

    dataset: str
    subject: str
    clip: str
    emotion: str
    label: str | None
    onset_frame: int | None
    apex_frame: int | None
    offset_frame: int | None
    frames: dict[int, Path] = dataclasses.field(default_factory=dict)
    status: str = OK
    problem: str = ""
    apex_rule: str = "annotated"
    source: str = ""
    row: int | None = None
    objective_class: int | None = None

    @property
    def key(self) -> str:
        return sample_key(self.dataset, self.subject, self.clip)

    @property
    def usable(self) -> bool:
        return self.status != UNUSABLE

    @property
    def onset_path(self) -> Path | None:
        return self.frames.get(self.onset_frame) if self.onset_frame is not None else None

    @property
    def apex_path(self) -> Path | None:
        return self.frames.get(self.apex_frame) if self.apex_frame is not None else None

    def frame_paths(self) -> list[Path]:
        """Files from onset to offset, in frame order."""
        return [self.frames[n] for n in sorted(self.frames)]

    def mark(self, status: str, problem: str) -> None:
        """Record a problem; an unusable clip stays unusable, messages accumulate."""
        if self.status != UNUSABLE:
            self.status = status
        self.problem = f"{self.problem}; {problem}" if self.problem else problem

    def as_row(self) -> dict[str, object]:
        onset, apex = self.onset_path, self.apex_path
        return {
            "dataset": self.dataset,
            "subject": self.subject,
            "clip": self.clip,
            "emotion": self.emotion,
            "label": self.label or "",
            "onset_frame": "" if self.onset_frame is None else self.onset_frame,
            "apex_frame": "" if self.apex_frame is None else self.apex_frame,
            "offset_frame": "" if self.offset_frame is None else self.offset_frame,
            "onset_path": str(onset) if onset else "",
            "apex_path": str(apex) if apex else "",
            "status": self.status,
            "problem": self.problem,
            "n_frames": len(self.frames),
            "apex_rule": self.apex_rule,
            "source": self.source,
            "row": "" if self.row is None else self.row,
            OBJECTIVE_COLUMN: "" if self.objective_class is None else self.objective_class,
        }


_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def frame_number(path: Path) -> int | None:
    """The frame number in a file name: the last run of digits (``reg_img46.jpg`` -> 46)."""
    match = _LAST_NUMBER.search(path.stem)
    return int(match.group(1)) if match else None


def numbered_frames(folder: Path) -> dict[int, Path]:
    """Image files of ``folder`` by frame number, sorted by number (never by name).

    Files without a number or with another suffix (``Desktop - Shortcut.lnk``,
    ``Thumbs.db``) are ignored. Two files with the same number: the first by
    name wins (releases do not have this; a copy such as ``img46 (1).jpg`` does).
    """
    found: dict[int, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.suffix.lower() not in FRAME_SUFFIXES or not entry.is_file():
            continue
        number = frame_number(entry)
        if number is not None and number not in found:
            found[number] = entry
    return dict(sorted(found.items()))


class UnsafePathError(FrMerError, ValueError):
    """A path taken from an annotation file would leave the dataset root."""


def safe_join(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing absolute parts and anything that leaves ``root``.

    Spreadsheet cells become path parts; a cell such as ``../../etc`` or
    ``/home/x`` must not make fr-mer read outside the dataset the user named.
    """
    root_resolved = Path(os.path.realpath(root))
    for part in parts:
        text = str(part)
        if not text or Path(text).is_absolute() or text.startswith(("/", "\\")) or (
            len(text) > 1 and text[1] == ":"
        ):
            raise UnsafePathError(f"path part {text!r} is empty or absolute")
    candidate = Path(os.path.realpath(root_resolved.joinpath(*map(str, parts))))
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UnsafePathError(
            f"{'/'.join(map(str, parts))!r} leaves the dataset root {root_resolved}"
        )
    return candidate
