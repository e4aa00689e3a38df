"""What the three database readers share: finding folders, the annotation file, and the frame rules.

The rules that turn an annotated row into frame files (which frames, which
apex, what counts as repaired or unusable) live here once, so CASME II and
SAMM follow the same ones and ``docs/datasets.md`` can describe them in one place.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from fr_mer.errors import FrMerError
from fr_mer.pipeline.clips import REPAIRED, UNUSABLE, Clip, UnsafePathError, numbered_frames, safe_join
from fr_mer.pipeline.labels import canonical_subject, composite_class
from fr_mer.pipeline.xlsx import Sheet, SheetError, cell_int, cell_text, read_table

#: How deep below ``--root`` the subject folders may sit (archives nest).
MAX_DEPTH = 6

#: Folders never searched: macOS archive debris and version-control folders.
_SKIP_FOLDERS = {"__macosx", ".git", ".svn", "$recycle.bin"}

#: Names of the databases in messages.
TITLES = {"casme2": "CASME II", "samm": "SAMM", "smic": "SMIC-HS"}


class DatasetError(FrMerError, ValueError):
    """A root or annotation file that cannot be used at all; the message names it and what to do."""


class DatasetNotFoundError(DatasetError):
    """No subject folders of the database under the root given."""


@dataclasses.dataclass
class SubjectFolders:
    """The folder holding a release's subject folders, and those folders by canonical id."""

    base: Path
    subjects: dict[str, Path]


def check_root(root: Path | str, title: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: folder not found; check the {title} root you gave")
    if not path.is_dir():
        raise DatasetError(
            f"{path}: is a file, not a folder; give the folder that holds the {title} release"
        )
    return Path(os.path.realpath(path))


def find_subject_folders(
    root: Path | str,
    dataset: str,
    *,
    pattern: re.Pattern[str],
    canonical: Callable[[str], str],
    accept: Callable[[Path], bool],
    example: str,
    skip: Iterable[str] = (),
    prefer: str | None = None,
) -> SubjectFolders:
    """Find the subject folders of a release anywhere below ``root`` (at most MAX_DEPTH levels).

    Archives nest (``Cropped/Cropped/sub01``) and hold junk, so no depth is assumed:
    every folder whose name matches ``pattern`` and passes ``accept`` is a subject
    folder, and the search does not enter it. Folders named in ``skip`` (lower
    case) are not entered. When subject folders sit in more than one place, those
    under a folder named ``prefer`` win (SMIC's ``HS``); if several places remain
    the root is ambiguous and an error asks for one of them.
    """
    title = TITLES[dataset]
    root = check_root(root, title)
    skip = {s.lower() for s in skip} | _SKIP_FOLDERS
    groups: dict[Path, list[Path]] = {}

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            name = child.name
            if name.startswith(".") or name.lower() in skip:
                continue
            if pattern.fullmatch(name) and accept(child):
                groups.setdefault(folder, []).append(child)
            elif depth < MAX_DEPTH:
                walk(child, depth + 1)

    walk(root, 0)
    if not groups:
        raise DatasetNotFoundError(
            f"{root}: no {title} subject folders ({example}) found within {MAX_DEPTH} levels; "
            f"point the root at the {title} release folder (the one that holds the subject "
            "folders) or at any folder above it"
        )
    if prefer is not None and len(groups) > 1:
        preferred = {
            base: found
            for base, found in groups.items()
            if prefer.lower() in (part.lower() for part in base.relative_to(root).parts)
            or base.name.lower() == prefer.lower()
        }
        groups = preferred or groups
    if len(groups) > 1:
        places = "; ".join(
            f"{base} ({len(found)} subjects)" for base, found in sorted(groups.items())
        )
        raise DatasetError(
            f"{root}: {title} subject folders found in more than one place: {places}; "
            "point the root at one of them"
        )
    base, found = next(iter(groups.items()))
    subjects: dict[str, Path] = {}
    for folder in sorted(found, key=lambda p: natural_key(p.name)):
        subjects.setdefault(canonical(folder.name), folder)
    return SubjectFolders(base=base, subjects=subjects)


def find_annotation_file(
    dataset: str,
    root: Path,
    base: Path,
    pattern: re.Pattern[str],
    example: str,
) -> Path:
    """The annotation spreadsheet beside the release: from ``base`` up to ``root``'s parent.

    Users keep it beside the frames folder (``CASME2/CASME2-coding-20140508.xlsx``
    next to ``CASME2/CASME2_RAW_selected``), so every folder on the way from the
    subject folders' parent up to one above the root given is looked at (not
    their subfolders). In one folder, the last name in sort order wins: the
    newer CASME II coding file (20190701) over the older one.
    """
    title = TITLES[dataset]
    folders: list[Path] = []
    folder = base
    stop = root.parent
    while True:
        folders.append(folder)
        if folder == stop or folder.parent == folder:
            break
        folder = folder.parent
    for folder in folders:
        try:
            names = sorted(
                p for p in folder.iterdir()
                if p.is_file() and pattern.search(p.name) and not p.name.startswith(("~$", "."))
            )
        except OSError:
            continue
        if names:
            return names[-1]
    raise DatasetError(
        f"no {title} annotation file ({example}) found in {base} or the folders above it up to "
        f"{stop}; give its path (fr-mer: --annotations)"
    )


def read_annotations(dataset: str, path: Path | str, columns, *, required, sheets=()) -> Sheet:
    title = TITLES[dataset]
    try:
        sheet = read_table(path, columns, required=required, sheets=sheets)
    except SheetError as error:
        raise DatasetError(f"{error} (the {title} annotation file)") from None
    if not sheet.rows:
        raise DatasetError(
            f"{sheet.where}: the header is on row {sheet.header_row} but no clip rows follow; "
            f"give the complete {title} annotation file"
        )
    return sheet


_NUMBERS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key ordering numbers by value (``s2`` before ``s10``, ``img46`` before ``img100``)."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _NUMBERS.split(name))


def child_folder(parent: Path, name: str) -> Path | None:
    """``parent/name`` when it is a folder; else the one folder whose name matches ignoring case."""
    exact = parent / name
    if exact.is_dir():
        return exact
    try:
        matches = [p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    except OSError:
        return None
    return matches[0] if len(matches) == 1 else None


def clip_folder_name(value: object) -> str:
    """The clip folder a Filename cell names; UnsafePathError for anything but a plain name."""
    name = cell_text(value)
    if not name:
        raise UnsafePathError("the Filename cell is empty")
    if name in (".", "..") or "/" in name or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise UnsafePathError(f"Filename {name!r} is not a plain folder name (refused)")
    return name


def middle_frame(numbers: Sequence[int]) -> int:
    """The middle frame of the frames on disk: ``sorted(numbers)[len // 2]``.

    This is what MEGC2019 pipelines do for SMIC (``frames[len(frames) // 2]``): the
    frame at the middle index, the later of the two middles for an even count,
    so it differs from the onset whenever the clip has two frames or more.
    """
    ordered = sorted(numbers)
    return ordered[len(ordered) // 2]


def nearest_frame(numbers: Iterable[int], target: int) -> int:
    """The frame number closest to ``target`` (the earlier one on a tie)."""
    return min(numbers, key=lambda n: (abs(n - target), n))


def format_ranges(ranges: Sequence[tuple[int, int]], limit: int = 6) -> str:
    """``[(3, 5), (9, 9)]`` -> ``'3-5, 9'`` (at most ``limit`` ranges, then ``...``)."""
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    return text + (", ..." if len(ranges) > limit else "")


def number_ranges(numbers: Iterable[int], limit: int = 6) -> str:
    """``[3, 4, 5, 9]`` -> ``'3-5, 9'``."""
    ranges: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return format_ranges(ranges, limit)


def frame_gaps(numbers: Iterable[int], first: int, last: int) -> list[tuple[int, int]]:
    """Runs of frame numbers in ``first..last`` absent from ``numbers``, as (start, end) pairs.

    Walks the frames present, so a typo such as an offset of 10**9 costs nothing.
    """
    gaps: list[tuple[int, int]] = []
    expected = first
    for n in sorted(n for n in set(numbers) if first <= n <= last):
        if n > expected:
            gaps.append((expected, n - 1))
        expected = n + 1
    if expected <= last:
        gaps.append((expected, last))
    return gaps


def describe_gaps(numbers: Iterable[int], first: int, last: int) -> str | None:
    """``'2 of 7 frames missing: 13-14'``, or None when ``first..last`` is complete."""
    gaps = frame_gaps(numbers, first, last)
    if not gaps:
        return None
    count = sum(b - a + 1 for a, b in gaps)
    return f"{count} of {last - first + 1} frames missing: {format_ranges(gaps)}"


def attach_frames(clip: Clip, folder: Path, onset_cell: object, apex_cell: object,
                  offset_cell: object, *, columns: dict[str, str]) -> Clip:
    """Resolve an annotated row (CASME II, SAMM) to frame files by the rules of docs/datasets.md.

    Unusable: onset/offset not whole numbers, offset <= onset, no frame files in
    onset..offset, onset or apex file empty (0 bytes). Repaired (and said so in
    ``problem``): frames missing inside onset..offset (onset/offset move to the
    first/last frame on disk); apex cell not a number (``'/'``), apex outside
    [onset, offset] or equal to the onset: the middle frame; apex file missing:
    the nearest frame on disk. An apex equal to the offset is kept as annotated.
    """
    onset, offset = cell_int(onset_cell), cell_int(offset_cell)
    for value, cell, field in ((onset, onset_cell, "onset"), (offset, offset_cell, "offset")):
        if value is None:
            clip.mark(UNUSABLE, f"{columns[field]} cell {cell_text(cell)!r} is not a frame number")
    if onset is None or offset is None:
        return clip
    clip.onset_frame, clip.offset_frame = onset, offset
    if offset <= onset:
        clip.mark(UNUSABLE, f"offset {offset} is not after onset {onset}")
        return clip

    on_disk = numbered_frames(folder)
    if not on_disk:
        clip.mark(UNUSABLE, f"clip folder {folder} holds no frame images")
        return clip
    frames = {n: p for n, p in on_disk.items() if onset <= n <= offset}
    if len(frames) < 2:
        clip.mark(
            UNUSABLE,
            f"{len(frames)} frame file(s) numbered {onset}..{offset} in {folder} "
            f"(it holds frames {number_ranges(on_disk)})",
        )
        clip.frames = frames
        return clip
    clip.frames = frames
    missing = describe_gaps(frames, onset, offset)
    if missing:
        first, last = min(frames), max(frames)
        moved = []
        if first != onset:
            moved.append(f"onset moved to {first}")
        if last != offset:
            moved.append(f"offset moved to {last}")
        clip.mark(REPAIRED, missing + (f" ({', '.join(moved)})" if moved else ""))
        clip.onset_frame, clip.offset_frame = first, last

    apex = cell_int(apex_cell)
    reason = None
    if apex is None:
        reason = f"{columns['apex']} cell {cell_text(apex_cell)!r} is not a frame number"
    elif not onset <= apex <= offset:
        reason = f"apex {apex} outside onset..offset {onset}..{offset}"
    elif apex == onset:
        reason = f"apex equals onset {onset} (no motion from onset to apex)"
    if reason is not None:
        clip.apex_frame = middle_frame(frames)
        clip.apex_rule = "middle"
        clip.mark(REPAIRED, f"{reason}: middle frame {clip.apex_frame} used")
    else:
        clip.apex_frame = apex
        if apex not in frames:
            clip.apex_frame = nearest_frame(frames, apex)
            clip.apex_rule = "nearest"
            clip.mark(REPAIRED,
                      f"apex frame {apex} not on disk: nearest frame {clip.apex_frame} used")
        if clip.apex_frame == clip.onset_frame:
            clip.apex_frame = middle_frame(frames)
            clip.apex_rule = "middle"
            clip.mark(REPAIRED, "apex fell on the onset after the repair: "
                                f"middle frame {clip.apex_frame} used")
    check_nonempty(clip)
    return clip


def check_nonempty(clip: Clip) -> None:
    """Unusable when the onset or apex file is empty (0 bytes: a truncated copy)."""
    for name, path in (("onset", clip.onset_path), ("apex", clip.apex_path)):
        try:
            if path is not None and path.stat().st_size == 0:
                clip.mark(UNUSABLE, f"{name} file {path} is empty (0 bytes); copy it again")
        except OSError as error:
            clip.mark(UNUSABLE, f"{name} file {path} cannot be read ({error.strerror})")


def locate_clip_folder(clip: Clip, subjects: SubjectFolders, name_cell: object) -> Path | None:
    """The clip folder a row names, inside the release; else the clip is marked unusable."""
    title = TITLES[clip.dataset]
    try:
        name = clip_folder_name(name_cell)
    except UnsafePathError as error:
        clip.mark(UNUSABLE, str(error))
        return None
    subject_folder = subjects.subjects.get(clip.subject)
    if subject_folder is None:
        clip.mark(UNUSABLE, f"subject folder of {clip.subject} not found in {subjects.base}")
        return None
    folder = child_folder(subject_folder, name)
    if folder is None:
        clip.mark(UNUSABLE,
                  f"clip folder {subject_folder.name}/{name} not found in {subjects.base}")
        return None
    try:
        # A symbolic link inside the release must not lead out of it.
        return safe_join(subjects.base, subject_folder.name, folder.name)
    except UnsafePathError as error:
        clip.mark(UNUSABLE, f"{title} clip folder refused: {error}")
        return None


def is_duplicate(clip: Clip, seen: dict[tuple[str, str], int | None]) -> bool:
    """Marks the clip unusable when an earlier row named the same clip."""
    key = (clip.subject, clip.clip.lower())
    if key in seen:
        clip.mark(UNUSABLE, f"duplicate of row {seen[key]} ({clip.subject}/{clip.clip})")
        return True
    seen[key] = clip.row
    return False


def read_annotated_release(
    dataset: str,
    root: Path | str,
    annotations: Path | str | None,
    *,
    subject_folders: Callable[[Path], SubjectFolders],
    columns: dict[str, tuple[str, ...]],
    required: Sequence[str],
    sheets: Sequence[str],
    annotation_pattern: re.Pattern[str],
    annotation_example: str,
    emotion: Callable[[str], str] = str,
) -> list[Clip]:
    """CASME II and SAMM: one :class:`Clip` per spreadsheet row, in row order.

    ``emotion`` normalises the Estimated Emotion cell (CASME II: lower case;
    SAMM: kept as written, capitalised). Rows are never dropped: a row that
    cannot be used comes back with status unusable and the reason.
    """
    root_path = check_root(root, TITLES[dataset])
    subjects = subject_folders(root_path)
    if annotations is None:
        annotations = find_annotation_file(
            dataset, root_path, subjects.base, annotation_pattern, annotation_example
        )
    sheet = read_annotations(dataset, annotations, columns, required=required, sheets=sheets)
    clips: list[Clip] = []
    seen: dict[tuple[str, str], int | None] = {}
    for row in sheet.rows:
        spelled = emotion(cell_text(row["emotion"]))
        clip = Clip(
            dataset=dataset,
            subject="",
            clip=cell_text(row["filename"]),
            emotion=spelled,
            label=composite_class(dataset, spelled) if spelled else None,
            onset_frame=None,
            apex_frame=None,
            offset_frame=None,
            source=str(sheet.path),
            row=row.row,
        )
        clips.append(clip)
        try:
            clip.subject = canonical_subject(dataset, row["subject"])
        except ValueError:
            clip.subject = cell_text(row["subject"])
            column = sheet.columns["subject"]
            clip.mark(UNUSABLE, f"{column} cell {clip.subject!r} is not a subject number")
            continue
        if is_duplicate(clip, seen):
            continue
        folder = locate_clip_folder(clip, subjects, row["filename"])
        if folder is None:
            continue
        attach_frames(clip, folder, row["onset"], row["apex"], row["offset"], columns=sheet.columns)
    return clips


def unannotated_folders(subjects: SubjectFolders, clips: Iterable[Clip]) -> list[str]:
    """``subject/clip`` folders on disk that no row names.

    The real CASME II release has two: sub09/EP02_02f and sub24/EP02_07.
    """
    named = {(c.subject, c.clip.lower()) for c in clips}
    found = []
    for subject, folder in subjects.subjects.items():
        try:
            children = sorted((p for p in folder.iterdir() if p.is_dir()),
                              key=lambda p: natural_key(p.name))
        except OSError:
            continue
        for child in children:
            if not child.name.startswith(".") and (subject, child.name.lower()) not in named:
                found.append(f"{folder.name}/{child.name}")
    return found
