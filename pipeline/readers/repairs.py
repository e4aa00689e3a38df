"""The rules that turn an annotated row into frame files, each one named and documented once.

Every annotated release (CASME II, SAMM) goes through :func:`attach_frames`, which
applies the rules below in order; SMIC-HS, which has no annotated interval, uses
the frame rules (gaps, middle frame, empty files) on the folder's frames.
A rule either repairs the clip (status ``repaired``, what was done in ``problem``)
or makes it unusable (the reason in ``problem``); no rule drops a row.
``docs/datasets.md`` lists the same rules as a table.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fr_mer.pipeline.clips import REPAIRED, UNUSABLE, Clip, numbered_frames
from fr_mer.pipeline.frame_checks import FLAG_MEANINGS, exif_orientation, frame_content_flags, same_number_files
from fr_mer.pipeline.xlsx import cell_int, cell_text


# --------------------------------------------------------------------------- frame numbers


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


# --------------------------------------------------------------------------- the rules


def duplicate_row(clip: Clip, seen: dict[tuple[str, str], int | None]) -> bool:
    """Rule *duplicate row* (unusable): an earlier row named the same clip.

    ``seen`` maps (subject, clip id in lower case) to the row that named it first.
    """
    key = (clip.subject, clip.clip.lower())
    if key in seen:
        clip.mark(UNUSABLE, f"duplicate of row {seen[key]} ({clip.subject}/{clip.clip})")
        return True
    seen[key] = clip.row
    return False


def annotated_interval(clip: Clip, onset_cell: object, offset_cell: object,
                       columns: Mapping[str, str]) -> tuple[int, int] | None:
    """Rules *interval not numbers* and *offset not after onset* (unusable).

    Onset and offset must be whole numbers and offset > onset; a reversed or
    empty interval names no motion to repair. Returns (onset, offset) or None.
    """
    onset, offset = cell_int(onset_cell), cell_int(offset_cell)
    for value, cell, field in ((onset, onset_cell, "onset"), (offset, offset_cell, "offset")):
        if value is None:
            clip.mark(UNUSABLE, f"{columns[field]} cell {cell_text(cell)!r} is not a frame number")
    if onset is None or offset is None:
        return None
    clip.onset_frame, clip.offset_frame = onset, offset
    if offset <= onset:
        clip.mark(UNUSABLE, f"offset {offset} is not after onset {onset}")
        return None
    return onset, offset


def frames_in_interval(clip: Clip, folder: Path, onset: int, offset: int) -> dict[int, Path] | None:
    """Rules *no frames* and *fewer than two frames* (unusable).

    The clip's frames are the folder's image files numbered onset..offset; a
    folder without images, or fewer than two of them in the interval (no pair
    to compute motion from), makes the clip unusable. Returns the frames or None.
    """
    on_disk = numbered_frames(folder)
    if not on_disk:
        clip.mark(UNUSABLE, f"clip folder {folder} holds no frame images")
        return None
    frames = {n: p for n, p in on_disk.items() if onset <= n <= offset}
    clip.frames = frames
    if len(frames) < 2:
        clip.mark(
            UNUSABLE,
            f"{len(frames)} frame file(s) numbered {onset}..{offset} in {folder} "
            f"(it holds frames {number_ranges(on_disk)})",
        )
        return None
    return frames


def missing_frames(clip: Clip, frames: Mapping[int, Path], onset: int, offset: int) -> None:
    """Rule *frames missing* (repaired): gaps inside onset..offset are listed, and the
    onset/offset move to the first/last frame present."""
    missing = describe_gaps(frames, onset, offset)
    if not missing:
        return
    first, last = min(frames), max(frames)
    moved = []
    if first != onset:
        moved.append(f"onset moved to {first}")
    if last != offset:
        moved.append(f"offset moved to {last}")
    clip.mark(REPAIRED, missing + (f" ({', '.join(moved)})" if moved else ""))
    clip.onset_frame, clip.offset_frame = first, last


def use_middle_frame(clip: Clip, frames: Mapping[int, Path], reason: str) -> None:
    """Rule *middle frame* (repaired): the apex becomes :func:`middle_frame` of the frames."""
    clip.apex_frame = middle_frame(list(frames))
    clip.apex_rule = "middle"
    clip.mark(REPAIRED, f"{reason}: middle frame {clip.apex_frame} used")


def annotated_apex(clip: Clip, frames: Mapping[int, Path], onset: int, offset: int,
                   apex_cell: object, columns: Mapping[str, str]) -> None:
    """The apex rules, on the annotated onset..offset.

    - *apex not a number* (``'/'``), *apex outside [onset, offset]* (an onset after
      the apex included), *apex equals onset*: the middle frame (no motion from
      onset to onset; clamping an out-of-range apex would land on the onset or on
      a frame where the expression has ended).
    - *apex not on disk*: the nearest frame present (``apex_rule=nearest``); when
      that is the onset (after a gap repair), the middle frame.
    - An apex equal to the offset is kept as annotated.
    """
    apex = cell_int(apex_cell)
    reason = None
    if apex is None:
        reason = f"{columns['apex']} cell {cell_text(apex_cell)!r} is not a frame number"
    elif not onset <= apex <= offset:
        reason = f"apex {apex} outside onset..offset {onset}..{offset}"
    elif apex == onset:
        reason = f"apex equals onset {onset} (no motion from onset to apex)"
    if reason is not None:
        use_middle_frame(clip, frames, reason)
        return
    clip.apex_frame = apex
    if apex not in frames:
        clip.apex_frame = nearest_frame(frames, apex)
        clip.apex_rule = "nearest"
        clip.mark(REPAIRED, f"apex frame {apex} not on disk: nearest frame {clip.apex_frame} used")
    if clip.apex_frame == clip.onset_frame:
        use_middle_frame(clip, frames, "apex fell on the onset after the repair")


def empty_files(clip: Clip) -> None:
    """Rule *empty file* (unusable): the onset or apex file is 0 bytes (a truncated copy)
    or cannot be read."""
    for name, path in (("onset", clip.onset_path), ("apex", clip.apex_path)):
        try:
            if path is not None and path.stat().st_size == 0:
                clip.mark(UNUSABLE, f"{name} file {path} is empty (0 bytes); copy it again")
        except OSError as error:
            clip.mark(UNUSABLE, f"{name} file {path} cannot be read ({error.strerror})")


def frame_file_doubts(clip: Clip) -> None:
    """Rules *one number, two files*, *rotated frame* and *blank or noise frame* (repaired, so flagged in
    the scan table and, as ``repaired``, in the cache): two image files of the clip folder map to one of
    its frame numbers (``img00296.jpg`` beside ``img296.jpg``: the first by name is used); the onset or
    apex JPEG carries an EXIF orientation (it is read turned upright, as OpenCV reads every frame, in
    training and in predict); the onset or apex decodes to a blank or noise picture (the cache flags it
    ``onset_blank``, ``apex_noise``, ...). A frame that does not decode is left to preprocessing, which
    fails that sample naming the file."""
    if not clip.frames:
        return
    folder = next(iter(clip.frames.values())).parent
    for number, paths in sorted(same_number_files(folder, set(clip.frames)).items()):
        clip.mark(REPAIRED, f"frame {number} has {len(paths)} files ({', '.join(p.name for p in paths)}): "
                            f"{paths[0].name} used; remove the other")
    for name, path in (("onset", clip.onset_path), ("apex", clip.apex_path)):
        orientation = exif_orientation(path) if path is not None else 1
        if orientation != 1:
            clip.mark(REPAIRED, f"{name} file {path.name} carries EXIF orientation {orientation} (rotated or "
                                "mirrored): read turned upright, as every frame is read")
        for flag in frame_content_flags(path, name) if path is not None else ():
            kind = flag.split("_")[-1]
            clip.mark(REPAIRED, f"{name} file {path.name} looks {kind} ({FLAG_MEANINGS[kind]}): the sample is "
                                f"made and flagged {flag}; check the file")


def attach_frames(clip: Clip, folder: Path, onset_cell: object, apex_cell: object,
                  offset_cell: object, *, columns: Mapping[str, str]) -> Clip:
    """Resolve an annotated row to frame files by the rules above, in order.

    ``columns``: field (``onset``, ``apex``, ``offset``) -> header text, for messages.
    """
    interval = annotated_interval(clip, onset_cell, offset_cell, columns)
    if interval is None:
        return clip
    onset, offset = interval
    frames = frames_in_interval(clip, folder, onset, offset)
    if frames is None:
        return clip
    missing_frames(clip, frames, onset, offset)
    annotated_apex(clip, frames, onset, offset, apex_cell, columns)
    empty_files(clip)
    frame_file_doubts(clip)
    return clip
