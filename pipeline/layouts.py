"""Writers of the releases' real on-disk layouts and annotation files, any pixels.

CASME II, SAMM, SMIC-HS and CAS(ME)^3 part A.

Used by the test fixtures (real structure, invented pixels) and by the synthetic
data generator (real structure, generated faces), so that whatever reads these
folders reads the releases users have. What each writer reproduces is in
``docs/datasets.md``; the facts come from ``../shared/specs/datasets.md``.
"""
from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from fr_mer.errors import ParameterError
from fr_mer.pipeline.labels import (
    SMIC_CODES,
    SUBJECT_FORMATS,
    canonical_smic_clip,
    canonical_subject,
    composite_subject,
    disk_subject,
    is_canonical_subject,
    smic_disk_clip,
    subject_number,
)

#: Spreadsheet file names and headers as released. ``None`` is a blank header cell.
CASME2_SPREADSHEETS = {
    "20140508": "CASME2-coding-20140508.xlsx",
    "20190701": "CASME2-coding-20190701.xlsx",
}
CASME2_HEADER = (
    "Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
    "Action Units", "Estimated Emotion",
)
CASME2_HEADER_2019 = CASME2_HEADER + ("Objective Classes",)
CASME2_FOLDERS = {"raw": "CASME2_RAW_selected", "cropped": "Cropped"}
CASME2_FRAME_NAMES = {"raw": "img{}.jpg", "cropped": "reg_img{}.jpg"}

SAMM_SPREADSHEET = "SAMM_Micro_FACS_Codes_v2.xlsx"
SAMM_SHEET = "MICRO_ONLY"
SAMM_HEADER = (
    "Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
    "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes",
)
#: Rows 1-13 of MICRO_ONLY are notes (invented wording; the header is on row 14).
SAMM_NOTE_ROWS = 13
SAMM_FOLDER = "SAMM"

SMIC_FOLDERS = {"raw": "SMIC_all_raw", "cropped": "SMIC_all_cropped"}
SMIC_RAW_PATTERN = "image{:06d}.bmp"
#: Class code of each SMIC emotion in clip names (``s1_ne_01``).
SMIC_EMOTION_CODES = {emotion: code for code, emotion in SMIC_CODES.items()}

CASME3_FOLDER = "part_A"
CASME3_ANNOTATIONS = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
CASME3_HEADER = ("Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion")
#: Subject folders and ``Subject`` cells: ``spNO.1``, ``spNO.2``, ... (unpadded; labels' format).
CASME3_SUBJECT = SUBJECT_FORMATS["casme3"][1]
#: The recorded tasks of a subject, one video (folder) each.
CASME3_TASKS = tuple("abcdefghijklm")

#: Invented "Objective Classes" value per emotion (the readers do not use the column).
_OBJECTIVE = {"happiness": 1, "happy": 1, "disgust": 2, "repression": 2, "surprise": 3, "fear": 4,
              "sadness": 5, "sad": 5, "anger": 6, "contempt": 6, "others": 7, "other": 7}
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII")

Frame = Callable[[int], np.ndarray]


@dataclasses.dataclass
class ClipSpec:
    """One clip to write.

    ``subject``: canonical id (``sub01``, ``006``, ``s01``). ``clip``: the name on
    disk (``EP02_01f``, ``006_1_2``, ``s1_ne_01``; SMIC also takes the canonical
    ``s01_ne_01``, written unpadded). ``emotion``: as the database spells it
    (CASME II ``disgust``, SAMM ``Anger``, SMIC ``negative``). ``onset``..``offset``:
    the absolute frame numbers written; ``apex``: the ApexFrame cell (None writes
    ``'/'``; SMIC has no apex). ``frame(n)``: the uint8 image (gray or BGR) of
    frame ``n``; None writes small invented images. ``cells``: spreadsheet cells
    to write instead of the derived ones, by header text (``{"Subject": 4}``
    writes the int 4 where the release has the text ``'04'``).
    """

    subject: str
    clip: str
    emotion: str
    onset: int
    apex: int | None
    offset: int
    action_units: str = ""
    frame: Frame | None = None
    cells: Mapping[str, object] = dataclasses.field(default_factory=dict)


def invented_frame(n: int, *, size: tuple[int, int] = (24, 32), color: bool = True) -> np.ndarray:
    """A small image that differs per frame number (the readers never look at pixels)."""
    height, width = size
    rows = np.arange(height, dtype=np.int32)[:, None]
    cols = np.arange(width, dtype=np.int32)[None, :]
    gray = ((rows * 7 + cols * 3 + n * 11) % 256).astype(np.uint8)
    return np.dstack([gray, gray[::-1], gray[:, ::-1]]) if color else gray


def write_frames(folder: Path | str, numbers: Iterable[int], name: str, frame: Frame | None = None,
                 *, color: bool = True) -> list[Path]:
    """Write frame ``n`` of ``numbers`` as ``folder/name.format(n)``; returns the files."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n in numbers:
        image = frame(n) if frame is not None else invented_frame(n, color=color)
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"frame {n}: expected a uint8 image, got {image.dtype}")
        path = folder / name.format(n)
        if not cv2.imwrite(str(path), image):
            raise OSError(errno.EIO, "OpenCV could not write the image", str(path))
        written.append(path)
    return written


def _au_cell(action_units: str) -> object:
    """The Action Units cell as the releases store it: a number when it is one, else text."""
    text = str(action_units)
    return int(text) if text.strip().isdigit() else text


def _save_sheet(path: Path, sheet: str, rows: Sequence[Sequence[object]]) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    for row in rows:
        ws.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def _row(header: Sequence[str | None], values: Mapping[str, object],
         overrides: Mapping[str, object]) -> list[object]:
    unknown = set(overrides) - {h for h in header if h}
    if unknown:
        raise ValueError(f"cells {sorted(unknown)} are not columns of this sheet: {list(header)}")
    merged = {**values, **overrides}
    return [merged.get(h) if h else None for h in header]


def write_casme2(
    root: Path | str,
    clips: Iterable[ClipSpec],
    *,
    release: str = "raw",
    spreadsheet: str = "20140508",
    nest: bool = False,
    junk: bool = True,
    extra_rows: Sequence[Mapping[str, object]] = (),
) -> Path:
    """Write ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`` (``release='cropped'``:
    ``Cropped/sub01/EP02_01f/reg_img46.jpg``) and ``CASME2-coding-<spreadsheet>.xlsx``
    beside it (sheet ``Sheet1``, header on row 1 with its two blank columns; 20190701
    adds ``Objective Classes``). ``nest`` doubles the top folder as archives do;
    ``junk`` adds ``Desktop - Shortcut.lnk`` and a ``Thumbs.db``. ``extra_rows``:
    more spreadsheet rows, cells by header text, with no frames. Returns the
    spreadsheet's path.
    """
    if release not in CASME2_FOLDERS:
        raise ParameterError(f"release must be one of {sorted(CASME2_FOLDERS)}, not {release!r}")
    if spreadsheet not in CASME2_SPREADSHEETS:
        raise ParameterError(
            f"spreadsheet must be one of {sorted(CASME2_SPREADSHEETS)}, not {spreadsheet!r}"
        )
    root = Path(root)
    top = root / CASME2_FOLDERS[release]
    if nest:
        top = top / CASME2_FOLDERS[release]
    header = CASME2_HEADER_2019 if spreadsheet == "20190701" else CASME2_HEADER
    rows: list[list[object]] = [list(header)]
    for spec in clips:
        subject = canonical_subject("casme2", spec.subject)
        folder = top / subject / spec.clip
        numbers = range(spec.onset, spec.offset + 1)
        write_frames(folder, numbers, CASME2_FRAME_NAMES[release], spec.frame)
        values = {
            "Subject": subject_number("casme2", subject),  # text '01', as the release stores it
            "Filename": spec.clip,
            "OnsetFrame": spec.onset,
            "ApexFrame": "/" if spec.apex is None else spec.apex,
            "OffsetFrame": spec.offset,
            "Action Units": _au_cell(spec.action_units),
            "Estimated Emotion": spec.emotion,
            "Objective Classes": _OBJECTIVE.get(spec.emotion.lower(), 7),
        }
        rows.append(_row(header, values, spec.cells))
        if junk:
            (folder / "Thumbs.db").write_bytes(b"\x00" * 16)
    for extra in extra_rows:
        rows.append(_row(header, {}, extra))
    if junk:
        top.mkdir(parents=True, exist_ok=True)
        (top / "Desktop - Shortcut.lnk").write_bytes(b"L\x00\x00\x00")
    return _save_sheet(root / CASME2_SPREADSHEETS[spreadsheet], "Sheet1", rows)


def write_samm(
    root: Path | str,
    clips: Iterable[ClipSpec],
    *,
    nest: bool = False,
    extra_rows: Sequence[Mapping[str, object]] = (),
) -> Path:
    """Write ``SAMM/006/006_1_2/006_05562.jpg`` (grayscale) and ``SAMM_Micro_FACS_Codes_v2.xlsx``
    beside it: sheet ``MICRO_ONLY``, 13 note rows, the header on row 14, ``Duration`` a
    formula. ``nest``: ``SAMM/SAMM/006``. ``extra_rows``: more rows (cells by header
    text), no frames. Returns the spreadsheet's path.
    """
    root = Path(root)
    top = root / SAMM_FOLDER
    if nest:
        top = top / SAMM_FOLDER
    rows: list[list[object]] = [
        [f"Note {i}: invented note row (the release explains its coding here)."] if i % 3 else []
        for i in range(1, SAMM_NOTE_ROWS + 1)
    ]
    rows.append(list(SAMM_HEADER))
    for spec in clips:
        subject = canonical_subject("samm", spec.subject)
        folder = top / subject / spec.clip
        numbers = range(spec.onset, spec.offset + 1)
        write_frames(folder, numbers, f"{subject}_{{:05d}}.jpg", spec.frame, color=False)
        excel_row = len(rows) + 1
        parts = spec.clip.split("_")
        values = {
            "Subject": subject,  # text '006'
            "Filename": spec.clip,
            "Inducement Code": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None,
            "Onset Frame": spec.onset,
            "Apex Frame": "/" if spec.apex is None else spec.apex,
            "Offset Frame": spec.offset,
            "Duration": f"=F{excel_row}-D{excel_row}",
            "Micro": "Micro",
            "Action Units": _au_cell(spec.action_units),
            "Estimated Emotion": spec.emotion,
            "Objective Classes": _OBJECTIVE.get(spec.emotion.lower(), 7),
            "Notes": None,
        }
        rows.append(_row(SAMM_HEADER, values, spec.cells))
    for extra in extra_rows:
        rows.append(_row(SAMM_HEADER, {}, extra))
    return _save_sheet(root / SAMM_SPREADSHEET, SAMM_SHEET, rows)


def write_smic(
    root: Path | str,
    clips: Iterable[ClipSpec],
    *,
    release: str = "raw",
    cropped_pattern: str = "reg_image{:06d}.bmp",
) -> None:
    """Write ``SMIC_all_raw/HS/s1/micro/negative/s1_ne_01/image######.bmp`` (``release='cropped'``:
    ``SMIC_all_cropped/HS/...`` named by ``cropped_pattern``), plus what sits beside it in the
    release and must be ignored: ``NIR`` and ``VIS`` trees and ``non_micro`` clips.
    """
    if release not in SMIC_FOLDERS:
        raise ParameterError(f"release must be one of {sorted(SMIC_FOLDERS)}, not {release!r}")
    top = Path(root) / SMIC_FOLDERS[release]
    pattern = SMIC_RAW_PATTERN if release == "raw" else cropped_pattern
    subjects = set()
    for spec in clips:
        subject = disk_subject("smic", canonical_subject("smic", spec.subject))
        emotion = spec.emotion.lower()
        clip = smic_disk_clip(spec.clip)
        write_frames(top / "HS" / subject / "micro" / emotion / clip,
                     range(spec.onset, spec.offset + 1), pattern, spec.frame)
        if subject not in subjects:
            subjects.add(subject)
            # Same subject and clip names under NIR/VIS (other cameras) and a
            # non-micro clip: a reader that does not skip them finds duplicates.
            for camera in ("NIR", "VIS"):
                write_frames(top / camera / subject / "micro" / emotion / clip, range(1, 4),
                             pattern)
            write_frames(top / "HS" / subject / "non_micro" / f"{subject}_non_01", range(1, 4),
                         pattern)


def write_casme3(
    root: Path | str,
    clips: Iterable[ClipSpec],
    *,
    annotations: str = "xlsx",
    depth: bool = True,
    extra_rows: Sequence[Mapping[str, object]] = (),
) -> Path:
    """Write CAS(ME)^3 part A: ``part_A/spNO.1/b/color/175.jpg`` (unpadded absolute frame
    numbers) and ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` beside ``part_A`` (header on
    row 1: Subject, Filename = the task letter, Onset, Apex, Offset, AU, Objective class in
    roman numerals, emotion in lower case); ``annotations='csv'`` writes the .csv export
    instead. Several clips may share a task folder (same subject and ``clip``, other
    frames). ``depth`` adds a ``depth/`` folder beside ``color/`` (small invented PNGs of
    the same numbers), which readers must ignore. Returns the annotation file's path.
    """
    if annotations not in ("xlsx", "csv"):
        raise ParameterError(f"annotations must be 'xlsx' or 'csv', not {annotations!r}")
    root = Path(root)
    rows: list[list[object]] = [list(CASME3_HEADER)]
    for spec in clips:
        if not is_canonical_subject("casme3", spec.subject):
            raise ValueError(f"CAS(ME)^3 subjects are spelt {CASME3_SUBJECT.format('N')}, not {spec.subject!r}")
        task = root / CASME3_FOLDER / spec.subject / spec.clip
        numbers = range(spec.onset, spec.offset + 1)
        write_frames(task / "color", numbers, "{}.jpg", spec.frame)
        if depth:
            write_frames(task / "depth", numbers, "{}.png", color=False)
        values = {
            "Subject": spec.subject,
            "Filename": spec.clip,
            "Onset": spec.onset,
            "Apex": "/" if spec.apex is None else spec.apex,
            "Offset": spec.offset,
            "AU": _au_cell(spec.action_units),
            "Objective class": _ROMAN[_OBJECTIVE.get(spec.emotion.lower(), 7) - 1],
            "emotion": spec.emotion,
        }
        rows.append(_row(CASME3_HEADER, values, spec.cells))
    for extra in extra_rows:
        rows.append(_row(CASME3_HEADER, {}, extra))
    path = root / CASME3_ANNOTATIONS
    if annotations == "xlsx":
        return _save_sheet(path, "Sheet1", rows)
    import csv

    path = path.with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(["" if v is None else v for v in row] for row in rows)
    return path


def write_composite_list(path: Path | str, rows: Iterable[tuple[str, str, str, int]]) -> Path:
    """Write a composite list in the official format: no header, CRLF line ends, columns
    dataset, subject, filename, class index (0 negative, 1 positive, 2 surprise), subjects
    as the official file writes them (``sub01``, ``s01``, ``6``), SMIC clips padded (``s01_ne_01``).
    """
    lines = []
    for dataset, subject, clip, label in rows:
        if int(label) not in (0, 1, 2):
            raise ValueError(f"class index {label!r} is not 0, 1 or 2 ({dataset}/{subject}/{clip})")
        if dataset == "smic":
            clip = canonical_smic_clip(clip)
        lines.append(f"{dataset},{composite_subject(dataset, subject)},{clip},{int(label)}\r\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(lines).encode("ascii"))
    return path
