"""What is suspicious in a clip's frame files or pixels, told apart from what is normal.

Two files that map to one frame number, a JPEG carrying an EXIF orientation, a
blank (one colour) or noise frame: each is made into a sample as before, never
silently; the scan table marks the clip (rule ``frame_file_doubts`` of
:mod:`fr_mer.pipeline.readers.repairs`) and the cache's flags name what was seen
(docs/cache-format.md). :func:`frames_fingerprint` tells a rerun that a cached
sample's frame files were replaced. numpy, and OpenCV (imported when a frame is decoded): ``fr-mer
scan`` uses it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fr_mer.pipeline.clips import FRAME_SUFFIXES, Clip, frame_number

#: A frame whose grey levels vary less than this (standard deviation) is blank: all black, one colour.
BLANK_STD = 2.0
#: Neighbouring pixels of a photograph are strongly correlated (at least 0.986 over the 236 onset and
#: apex frames of ../shared/data/casme2-real); a frame below this correlation is noise (a corrupt
#: decode, a sensor without a picture).
NOISE_CORRELATION = 0.3


#: What each content flag means (the scan table's words).
FLAG_MEANINGS = {
    "blank": f"grey levels vary by less than {BLANK_STD} (sd): all black or one colour",
    "noise": f"neighbouring pixels correlate below {NOISE_CORRELATION}: no picture",
}


def frame_content_flags(path: Path, role: str) -> list[str]:
    """:func:`content_flags` of a frame file read as preprocessing reads it (grayscale, EXIF applied);
    ``[]`` when it does not decode (preprocessing then fails the sample, naming the file)."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return []
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    return [] if image is None or min(image.shape) < 2 else content_flags(image, role)


def content_flags(image: np.ndarray, role: str) -> list[str]:
    """``[role + "_blank"]``, ``[role + "_noise"]`` or ``[]`` for one (H, W) frame (cache flags)."""
    values = np.asarray(image, dtype=np.float32)
    if values.std() < BLANK_STD:
        return [f"{role}_blank"]
    left, right = values[:, :-1].ravel(), values[:, 1:].ravel()
    spread = left.std() * right.std()
    correlation = float(((left - left.mean()) * (right - right.mean())).mean() / spread) if spread > 0 else 0.0
    return [f"{role}_noise"] if correlation < NOISE_CORRELATION else []


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


def frames_fingerprint(clip: Clip) -> str:
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
