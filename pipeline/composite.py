"""The MEGC2019 composite sample list: the protocol's definition of its 442 samples.

The official ``combined_3class_gt.csv`` ships with the package (``pipeline/data``);
its sha256 is checked so a silently edited copy cannot pass for the protocol.
A user may give another list in the same format (``--composite-list``), e.g. the
synthetic one that ``fr-mer synth`` writes.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from importlib import resources
from pathlib import Path

from fr_mer.errors import FrMerError
from fr_mer.pipeline.labels import CLASSES, DATABASES, canonical_smic_clip, canonical_subject, sample_key

OFFICIAL_FILENAME = "combined_3class_gt.csv"
OFFICIAL_SHA256 = "adf1de4a088d4c3b3bd01cc8d061e836264d0e05140266eb15d8dc1050f484a7"
#: Samples of each database in the official list (442 in all).
OFFICIAL_COUNTS = {"casme2": 145, "samm": 133, "smic": 164}


@dataclasses.dataclass(frozen=True)
class CompositeEntry:
    """One row of a composite list, with canonical ids (``006``, ``s01``, ``sub01``)."""

    dataset: str
    subject: str
    clip: str
    label: str
    row: int

    @property
    def key(self) -> str:
        return sample_key(self.dataset, self.subject, self.clip)


class CompositeListError(FrMerError, ValueError):
    pass


def official_list_path() -> Path:
    return Path(str(resources.files("fr_mer.pipeline") / "data" / OFFICIAL_FILENAME))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_composite_list(path: Path | None = None) -> list[CompositeEntry]:
    """Rows of a composite list (the official one when ``path`` is None).

    Format: no header, columns dataset, subject, filename, class index
    (0 negative, 1 positive, 2 surprise); CRLF or LF line ends.
    """
    official = path is None
    path = official_list_path() if official else Path(path)
    if not path.is_file():
        raise CompositeListError(f"{path}: composite list not found; check --composite-list")
    if official and file_sha256(path) != OFFICIAL_SHA256:
        raise CompositeListError(
            f"{path}: the shipped official composite list does not match its sha256 "
            f"{OFFICIAL_SHA256}; reinstall fr-mer"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CompositeListError(
            f"{path}: not UTF-8 text (byte {error.start}); a composite list is a UTF-8 CSV file "
            "(dataset, subject, filename, class): save it as UTF-8"
        ) from None
    entries: list[CompositeEntry] = []
    seen: set[str] = set()
    reader = csv.reader(io.StringIO(text, newline=""))
    number = 0
    try:
        for number, cells in enumerate(reader, start=1):
            entry = _entry(path, number, cells)
            if entry is None:
                continue
            if entry.key in seen:
                raise CompositeListError(f"{path}, row {number}: {entry.key} is listed twice")
            seen.add(entry.key)
            entries.append(entry)
    except csv.Error as error:
        raise CompositeListError(
            f"{path}, row {number + 1}: cannot be read as CSV ({error}); a composite list holds "
            "four short columns (dataset, subject, filename, class)"
        ) from None
    if not entries:
        raise CompositeListError(f"{path}: the composite list is empty")
    return entries


def _entry(path: Path, number: int, cells: list[str]) -> CompositeEntry | None:
    """One row as an entry with canonical ids; None for a blank row; CompositeListError naming
    the row otherwise."""
    if not cells or all(not c.strip() for c in cells):
        return None
    if len(cells) < 4:
        raise CompositeListError(
            f"{path}, row {number}: expected 4 columns (dataset, subject, filename, "
            f"class), found {len(cells)}: {cells!r}"
        )
    dataset, subject, clip, label = (c.strip() for c in cells[:4])
    dataset = dataset.lower()
    if dataset not in DATABASES:
        raise CompositeListError(
            f"{path}, row {number}: unknown dataset {dataset!r} "
            f"(expected {', '.join(DATABASES)})"
        )
    try:
        class_index = int(label)
        class_name = CLASSES[class_index]
        if class_index < 0:
            raise IndexError
    except (ValueError, IndexError):
        raise CompositeListError(
            f"{path}, row {number}: class {label!r} is not 0, 1 or 2"
        ) from None
    try:
        subject = canonical_subject(dataset, subject)
        if dataset == "smic":
            clip = canonical_smic_clip(clip)
    except ValueError as error:
        raise CompositeListError(
            f"{path}, row {number}: {error}; write the subject as the official list does "
            "(sub01, 6, s01)"
        ) from None
    return CompositeEntry(dataset, subject, clip, class_name, number)


def describe_list(path: Path | None) -> dict[str, object]:
    """Name and sha256 of the list in use, for caches and reports."""
    path = official_list_path() if path is None else Path(path)
    digest = file_sha256(path)
    return {"path": str(path), "sha256": digest, "official": digest == OFFICIAL_SHA256}
