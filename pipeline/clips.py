"""The record every reader produces: one annotated clip resolved to its frame files.

Readers (``pipeline.readers``) fill :class:`Clip`; ``fr-mer scan`` writes them as
a table; ``fr-mer preprocess`` turns each usable one into a cache sample.
"""
from __future__ import annotations

import dataclasses
import hashlib
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


def same_number_files(folder: Path, numbers: set[int]) -> dict[int, list[Path]]:
    """Frame numbers among ``numbers`` that two or more image files of ``folder`` map to
    (``img00296.jpg`` beside ``img296.jpg``), with the files sorted by name (the first is the one used)."""
    files: dict[int, list[Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return {}
    for entry in entries:
        if entry.suffix.lower() in FRAME_SUFFIXES and entry.is_file():
            number = frame_number(entry)
            if number in numbers:
                files.setdefault(number, []).append(entry)
    return {number: paths for number, paths in files.items() if len(paths) > 1}


def frames_fingerprint(clip: "Clip") -> str:
    """16 hex digits that change when the clip's frame files do: every frame's number, name and size, and
    the bytes of the onset and (annotated) apex files. Stored with each cached sample (``source``), so a
    rerun makes again a sample whose frames were replaced since it was cached."""
    digest = hashlib.sha256()
    for number, path in sorted(clip.frames.items()):
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        digest.update(f"{number}:{path.name}:{size};".encode("utf-8", "replace"))
    for number in (clip.onset_frame, clip.apex_frame):
        path = clip.frames.get(number) if number is not None else None
        if path is not None:
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"unreadable")
    return digest.hexdigest()[:16]


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of a JPEG frame (1: upright; 2-8: mirrored or rotated), 1 when it has none.

    OpenCV's ``imdecode`` applies it, so a frame that carries one is read turned; the readers and
    preprocessing flag it (rule *rotated frame*). Reads the first 64 KiB only.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(65536)
    except OSError:
        return 1
    if data[:2] != b"\xff\xd8":
        return 1
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker, length = data[position + 1], int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xE1 and data[position + 4:position + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[position + 10:position + 2 + length])
        if marker in (0xDA, 0xD9):  # image data: no EXIF header before it
            break
        position += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    first = int.from_bytes(tiff[4:8], order)
    if first + 2 > len(tiff):
        return 1
    for index in range(int.from_bytes(tiff[first:first + 2], order)):
        entry = tiff[first + 2 + 12 * index:first + 14 + 12 * index]
        if len(entry) == 12 and int.from_bytes(entry[:2], order) == 0x0112:
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else 1
    return 1


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
