"""One scanned clip to one cache sample: read its frames, then :func:`process_pair`'s stages.

:func:`process_clip` reads the onset and apex frames as grayscale (``read``);
SMIC clips scanned with ``--smic-apex spot`` (``Clip.apex_frame`` None) first get
their apex spotted (``spot``, :func:`~fr_mer.pipeline.preprocess.sample.spot_pair`)
on all their frames, aligned by the onset's transform. The frames onset..offset of the clip
models' inputs are read one at a time as :func:`process_pair` asks for them. The
clip's annotation gives the sample's metadata (the cache's metadata columns).
With ``defer_flow`` it stops before the flow and :func:`finish_clip` completes the
sample later, given its flow: the torch TV-L1 (``--flow-device cpu|cuda``) computes
the flows of many samples at once in the run's process.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterator, Mapping

import cv2
import numpy as np

from fr_mer.pipeline.align import AlignedPair
from fr_mer.pipeline.clips import REPAIRED, Clip
from fr_mer.pipeline.frame_checks import exif_orientation, frames_fingerprint
from fr_mer.pipeline.flow import tvl1_flows
from fr_mer.pipeline.labels import CLASS_INDEX
from fr_mer.pipeline.preprocess.params import PreprocessParams
from fr_mer.pipeline.preprocess.sample import (
    PendingPair,
    SampleError,
    StageClock,
    cache_flags,
    finish_pair,
    prepare_pair,
    spot_pair,
)

#: Flags of apexes that are not the annotated frame, by the reader's ``Clip.apex_rule``.
_APEX_FLAGS = {"middle": "apex_middle", "nearest": "apex_nearest"}

#: Folder names of the cropped releases (CASME II ``Cropped``, ``SMIC_all_cropped``).
_CROPPED_FOLDERS = {"cropped", "smic_all_cropped"}


@dataclasses.dataclass
class Sample:
    """A finished sample: cache metadata (``flags`` a list), arrays, seconds per stage."""

    key: str
    meta: dict[str, object]
    arrays: dict[str, np.ndarray]
    timings: dict[str, float]
    repaired: bool = False
    cpu_seconds: float = 0.0  # CPU time of the worker on this sample (wall time is in timings)
    #: A sample made with ``process_clip(..., defer_flow=True)``: everything but the flow, which
    #: :func:`finish_clip` adds (until then ``arrays`` lacks ``flow``).
    pending: PendingPair | None = None


#: The smallest frame side read (a face needs more pixels than this; a 1x1 image is not a frame).
MIN_FRAME_SIDE = 16


def read_gray(path: Path | str) -> np.ndarray:
    """A frame file as a (H, W) uint8 grayscale image (colour frames converted).

    Raises :class:`SampleError` naming the file when it is missing, empty,
    truncated or not an image OpenCV can decode.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SampleError(f"{path}: cannot read the frame ({exc.strerror or exc})") from exc
    if not data:
        raise SampleError(f"{path}: empty file (0 bytes); copy it again from the release")
    # Some OpenCV builds decode the top of a truncated JPEG as if it were whole;
    # the missing end-of-image marker is what tells.
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise SampleError(f"{path}: truncated JPEG (no end-of-image marker); copy it again from the release")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None or image.size == 0:
        raise SampleError(f"{path}: unreadable or truncated image; copy it again from the release")
    if min(image.shape) < MIN_FRAME_SIDE:
        raise SampleError(f"{path}: a {image.shape[1]}x{image.shape[0]} image, too small to hold a face (at least "
                          f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}); give the frame itself")
    return image


def _frame_path(clip: Clip, number: int, role: str) -> Path:
    path = clip.frames.get(number)
    if path is None:
        found = f"{min(clip.frames)}..{max(clip.frames)}" if clip.frames else "none"
        raise SampleError(f"{clip.key}: {role} frame {number} has no file (frames on disk: {found})")
    return path


def source_difference(clip: Clip, stored: Mapping[str, object]) -> str:
    """What of ``clip``'s sheet row and frame files differs from its cached sample's record (``stored``: the
    cache's source columns), e.g. ``label 0 -> 1, onset_frame 12 -> 14``; empty when nothing does. A spotted
    apex (no annotated one) is not compared."""
    current = {
        "emotion": clip.emotion or "",
        "label": CLASS_INDEX.get(clip.label, -1) if clip.label else -1,
        "onset_frame": -1 if clip.onset_frame is None else clip.onset_frame,
        "apex_frame": clip.apex_frame,
        "offset_frame": -1 if clip.offset_frame is None else clip.offset_frame,
        "objective_class": -1 if clip.objective_class is None else clip.objective_class,
    }
    changes = [f"{name} {stored[name]!r} -> {value!r}" for name, value in current.items()
               if value is not None and name in stored and stored[name] != value]
    # a sample cached before fingerprints has none: its frames cannot be compared
    if stored.get("source") and stored["source"] != frames_fingerprint(clip):
        changes.append("frame files replaced")
    return ", ".join(changes)


def is_pre_cropped(clip: Clip) -> bool:
    """Whether the clip's frames come from a cropped release (face fills the frame): :func:`is_pre_cropped_path`
    of its first frame."""
    path = next(iter(clip.frames.values()), None)
    return path is not None and is_pre_cropped_path(path)


def is_pre_cropped_path(path: Path | str) -> bool:
    """Whether a frame file comes from a cropped release: CASME II's ``Cropped``
    (``reg_img46.jpg``) and ``SMIC_all_cropped``, told by the release folder's name
    or the ``reg_`` file prefix."""
    path = Path(path)
    return path.name.lower().startswith("reg_") or any(part.lower() in _CROPPED_FOLDERS for part in path.parts[:-1])


def process_clip(clip: Clip, params: PreprocessParams, *, defer_flow: bool = False) -> Sample:
    """Turn one clip into a cache sample: its frames read, then :func:`process_pair`.

    Raises :class:`SampleError` with the reason when the clip cannot be used.
    Frames are read one at a time; whole frames are held together only to spot
    an SMIC apex (one SMIC clip: tens of 640x480 frames).

    ``defer_flow``: stop before the flow and return the sample with ``pending``
    set (no ``flow`` column yet), for a caller that computes the flows of many
    samples at once and completes each with :func:`finish_clip`.
    """
    if not clip.usable:
        raise SampleError(f"{clip.key}: unusable in the scan: {clip.problem or 'no reason given'}")
    if clip.onset_frame is None or not clip.frames:
        raise SampleError(f"{clip.key}: no onset frame or no frame files")
    cpu_start = time.process_time()
    clock = StageClock()
    flags: list[str] = []
    full: dict[int, np.ndarray] = {}
    aligned: AlignedPair | None = None
    apex_frame = clip.apex_frame
    if apex_frame is None:
        apex_frame, aligned = _spot(clip, params, full, clock)
        flags.append("apex_spotted")
    elif clip.apex_rule in _APEX_FLAGS:
        flags.append(_APEX_FLAGS[clip.apex_rule])

    with clock("read"):
        onset = full.get(clip.onset_frame)
        if onset is None:
            onset = read_gray(_frame_path(clip, clip.onset_frame, "onset"))
        apex = full.get(apex_frame)
        if apex is None:
            apex = read_gray(_frame_path(clip, apex_frame, "apex"))
    if onset.shape != apex.shape:
        raise SampleError(
            f"{clip.key}: onset {onset.shape[::-1]} and apex {apex.shape[::-1]} frames differ in size"
        )
    if any(exif_orientation(clip.frames[n]) != 1 for n in (clip.onset_frame, apex_frame) if n in clip.frames):
        flags.append("exif_rotated")
    clip_frames = None
    if params.clip or params.dynamic_images:
        first = clip.onset_frame
        last = clip.offset_frame if clip.offset_frame is not None else max(clip.frames)
        numbers = [n for n in sorted(clip.frames) if first <= n <= last]
        if len(numbers) < 2:
            raise SampleError(f"{clip.key}: fewer than two frames from onset {first} to offset {last}")
        if len(numbers) < last - first + 1:
            flags.append("frames_missing")
        clip_frames = _read_frames(clip, numbers, full, onset.shape)
    try:
        pending = prepare_pair(onset, apex, params, clip_frames=clip_frames, pre_cropped=is_pre_cropped(clip),
                               aligned=aligned)
    except SampleError as error:
        raise SampleError(f"{clip.key}: {error}") from None
    finally:
        full.clear()
    clock.add(pending.timings)
    flags.extend(pending.flags)

    repaired = clip.status == REPAIRED
    if repaired:
        flags.append("repaired")
    # the clip's flags and seconds travel with the pair, so that finishing it gives the whole sample's
    pending = dataclasses.replace(pending, flags=flags, timings=clock.seconds)
    meta = {
        "key": clip.key,
        "database": clip.dataset,
        "subject": clip.subject,
        "clip": clip.clip,
        "emotion": clip.emotion,
        "label": CLASS_INDEX.get(clip.label, -1) if clip.label else -1,
        "onset_frame": clip.onset_frame,
        "apex_frame": apex_frame,
        "offset_frame": clip.offset_frame,
        "flags": cache_flags(flags),
        "source": frames_fingerprint(clip),
    }
    if clip.objective_class is not None:  # the cache writes -1 (none) for a row without it
        meta["objective_class"] = clip.objective_class
    sample = Sample(clip.key, meta, pending.arrays, dict(clock.seconds), repaired=repaired,
                    cpu_seconds=time.process_time() - cpu_start, pending=pending)
    if defer_flow:
        return sample
    start, cpu_start = time.perf_counter(), time.process_time()
    (flow,) = tvl1_flows([pending.onset], [pending.apex], params.tvl1, implementation=params.flow_implementation)
    return finish_clip(sample, flow, params, flow_seconds=time.perf_counter() - start,
                       cpu_seconds=time.process_time() - cpu_start)


def finish_clip(sample: Sample, flow: np.ndarray, params: PreprocessParams, *, flow_seconds: float = 0.0,
                cpu_seconds: float = 0.0) -> Sample:
    """The finished sample of ``process_clip(..., defer_flow=True)``'s ``sample`` and its
    (flow_size, flow_size, 2) flow (:func:`~fr_mer.pipeline.preprocess.sample.finish_pair`).

    ``flow_seconds`` and ``cpu_seconds``: the wall and CPU time the flow took (a batch's share),
    added to the sample's.
    """
    if sample.pending is None:
        raise ValueError(f"{sample.key}: the sample is finished already (made without defer_flow)")
    try:
        pair = finish_pair(sample.pending, flow, params, flow_seconds=flow_seconds)
    except SampleError as error:
        raise SampleError(f"{sample.key}: {error}") from None
    meta = {**sample.meta, "flags": cache_flags(pair.flags)}
    return Sample(sample.key, meta, pair.arrays, pair.timings, repaired=sample.repaired,
                  cpu_seconds=sample.cpu_seconds + cpu_seconds)


def _read_frames(clip: Clip, numbers: list[int], full: Mapping[int, np.ndarray],
                 frame_shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """The frames ``numbers`` of ``clip``, read when asked for (those in ``full`` are not read again)."""
    for number in numbers:
        image = full.get(number)
        if image is None:
            image = read_gray(clip.frames[number])
        if image.shape != tuple(frame_shape):
            raise SampleError(
                f"{clip.frames[number]}: frame size {image.shape[::-1]} differs from the onset's "
                f"{tuple(frame_shape)[::-1]}"
            )
        yield image


def _spot(
    clip: Clip, params: PreprocessParams, full: dict[int, np.ndarray], clock: StageClock
) -> tuple[int, AlignedPair | None]:
    """Spot the apex of a clip without one (:func:`spot_pair` on all its frames); returns it and,
    when it is exact, the aligned pair. ``full`` receives the clip's frames, for the stages after.
    """
    _frame_path(clip, clip.onset_frame, "onset")
    numbers = sorted(clip.frames)
    with clock("read"):
        for number in numbers:
            full[number] = read_gray(clip.frames[number])
    shapes = {image.shape for image in full.values()}
    if len(shapes) > 1:
        raise SampleError(f"{clip.key}: frames of different sizes {sorted(s[::-1] for s in shapes)}")
    onset_index = numbers.index(clip.onset_frame)
    offset_index = numbers.index(clip.offset_frame) if clip.offset_frame in full else len(numbers) - 1
    try:
        spotted = spot_pair([full[n] for n in numbers], onset_index, offset_index, params,
                            pre_cropped=is_pre_cropped(clip), clock=clock)
    except SampleError as error:
        raise SampleError(f"{clip.key}: {error}") from None
    return numbers[spotted.index], spotted.aligned
