"""``fr-mer preprocess`` as a library: annotated clips in, cache samples out.

One sample (:func:`process_clip`, run in a worker process):

1. ``read``: the onset and apex frames as grayscale. SMIC clips scanned with
   ``--smic-apex spot`` (``Clip.apex_frame`` None) first get their apex spotted
   (``spot``, :func:`pipeline.spotting.spot_apex`) on all their frames, aligned
   by the onset's transform.
2. ``detect``, ``landmarks``, ``align``: one similarity transform found on the
   onset frame (:meth:`pipeline.align.FaceAligner.align_pair`, fallbacks and
   flags there), applied alike to the apex and to every clip frame, so
   alignment adds no motion of its own.
3. ``head_motion``: compensation of the head's own movement
   (:mod:`fr_mer.pipeline.headmotion`: ``rigid`` registers the apex before the flow,
   ``nose_flow`` subtracts the nose's flow after it).
4. ``flow``, ``strain``, ``features``: TV-L1 onset -> apex on the aligned face
   at ``flow_size``, optical strain, and the model input ``flow`` = (u, v,
   strain) resized to ``feature_size`` and normalised.
5. ``clip``, ``dynamic_images`` (only when asked): every frame onset..offset is
   read, warped by the same transform to a small crop and dropped; the clip is
   resampled to T frames (``clip_frames``) and/or turned into DSSI dynamic
   images (``dynamic_images``).

The runner (:class:`PreprocessRun`) fans clips out to ``jobs`` processes
(joblib's loky backend), takes the results back in order of completion, and
writes them from the main process only (``write``) through
:class:`pipeline.cache.CacheWriter`: samples already in the cache with the same
parameters are skipped, a sample that cannot be made is recorded as a failure
with its reason while the others go on, and a run killed at any moment loses at
most the samples in flight.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from fr_mer.errors import FrMerError
from fr_mer.pipeline.align import AlignedPair, AlignParams, FaceAligner, default_predictor_path
from fr_mer.pipeline.cache import ArraySpec, CacheError, CacheWriter
from fr_mer.pipeline.clips import REPAIRED, Clip
from fr_mer.pipeline.flow import (
    DEFAULT_FEATURE_SIZE,
    DEFAULT_FLOW_SIZE,
    NORMALISATIONS,
    TVL1Params,
    flow_features,
    optical_strain,
    tvl1_flow,
)
from fr_mer.pipeline.headmotion import DEFAULT_METHOD, METHODS, compensate, compensate_flow
from fr_mer.pipeline.labels import CLASS_INDEX
from fr_mer.pipeline.readers import SMIC_APEX_RULES
from fr_mer.pipeline.spotting import spot_apex
from fr_mer.pipeline.temporal import DEFAULT_FRAMES_PER_SEGMENT, dssi, resample_clip

#: Timed stages of one sample, in pipeline order. ``setup`` is loading dlib's
#: models, once per worker process; ``write`` is timed in the main process.
STAGES = (
    "setup", "read", "spot", "detect", "landmarks", "align", "head_motion",
    "flow", "strain", "features", "clip", "dynamic_images", "write",
)

#: Flags of apexes that are not the annotated frame, by the reader's ``Clip.apex_rule``.
_APEX_FLAGS = {"middle": "apex_middle", "nearest": "apex_nearest"}

#: Folder names of the cropped releases (CASME II ``Cropped``, ``SMIC_all_cropped``).
_CROPPED_FOLDERS = {"cropped", "smic_all_cropped"}


class SampleError(FrMerError, RuntimeError):
    """A sample that cannot be made; the message names the clip or file and the problem."""


# -- parameters ------------------------------------------------------------------

def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    """``clip_frames``: the aligned clip onset..offset resampled to ``length`` frames of ``size`` px.

    Defaults: 16 frames of 112x112 (MERANet's reconstruction, seed-models spec).
    """

    length: int = 16
    size: int = 112

    def __post_init__(self) -> None:
        _check_int("clip length", self.length, 2)
        _check_int("clip size", self.size, 16)


@dataclasses.dataclass(frozen=True)
class DynamicImageOptions:
    """``dynamic_images``: DSSI (:func:`pipeline.temporal.dssi`) on the aligned clip.

    ``segments`` segment dynamic images then the global one, ``size`` px square,
    ``frames_per_segment`` frames sampled per segment (None: all).
    """

    segments: int = 3
    size: int = 112
    frames_per_segment: int | None = DEFAULT_FRAMES_PER_SEGMENT

    def __post_init__(self) -> None:
        _check_int("dynamic-image segments", self.segments, 1)
        _check_int("dynamic-image size", self.size, 16)
        if self.frames_per_segment is not None:
            _check_int("frames per segment", self.frames_per_segment, 2)


@dataclasses.dataclass(frozen=True)
class PreprocessParams:
    """Everything that changes a sample's content; :meth:`as_dict` is the cache's ``params``.

    Attributes:
        flow_size: side (px) of the aligned face on which TV-L1 runs; the face
            crop ``onset_face``/``apex_face`` has ``align.face_size``.
        feature_size: side of the ``flow`` model input (u, v, strain).
        normalisation: scaling of ``flow`` (:data:`pipeline.flow.NORMALISATIONS`).
        tvl1: TV-L1 solver parameters.
        align: face crop and detection parameters.
        head_motion: compensation method (:data:`pipeline.headmotion.METHODS`).
        smic_apex: the rule SMIC clips were scanned with (``middle`` or ``spot``);
            recorded so caches made with the two rules are never mixed.
        clip, dynamic_images: the clip models' inputs; None (the default) leaves
            them out, so a user of the flow models does not pay for them.
        predictor: dlib's 68-point shape predictor file (None: the one of
            ``face-recognition-models``); the cache records its name and sha256.
    """

    flow_size: int = DEFAULT_FLOW_SIZE
    feature_size: int = DEFAULT_FEATURE_SIZE
    normalisation: str = "minmax255"
    tvl1: TVL1Params = dataclasses.field(default_factory=TVL1Params)
    align: AlignParams = dataclasses.field(default_factory=AlignParams)
    head_motion: str = DEFAULT_METHOD
    smic_apex: str = "middle"
    clip: ClipOptions | None = None
    dynamic_images: DynamicImageOptions | None = None
    predictor: str | None = None

    def __post_init__(self) -> None:
        _check_int("flow size", self.flow_size, 16)
        _check_int("feature size", self.feature_size, 1)
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"unknown normalisation {self.normalisation!r}: expected one of {', '.join(NORMALISATIONS)}"
            )
        if self.head_motion not in METHODS:
            raise ValueError(
                f"unknown head-motion method {self.head_motion!r}: expected one of {', '.join(METHODS)}"
            )
        if self.smic_apex not in SMIC_APEX_RULES:
            raise ValueError(
                f"unknown SMIC apex rule {self.smic_apex!r}: expected one of {', '.join(SMIC_APEX_RULES)}"
            )
        if self.predictor is not None and not Path(self.predictor).is_file():
            raise ValueError(
                f"{self.predictor}: landmark model not found; pass the path of dlib's "
                "shape_predictor_68_face_landmarks.dat, or leave the option out to use the packaged one"
            )

    @property
    def face_size(self) -> int:
        return self.align.face_size

    @property
    def predictor_path(self) -> Path:
        return Path(self.predictor) if self.predictor else Path(default_predictor_path())

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (the cache's ``params`` attribute)."""
        predictor = self.predictor_path
        return {
            "flow_size": self.flow_size,
            "feature_size": self.feature_size,
            "normalisation": self.normalisation,
            "tvl1": self.tvl1.as_dict(),
            "align": dataclasses.asdict(self.align),
            "head_motion": self.head_motion,
            "smic_apex": self.smic_apex,
            "clip": dataclasses.asdict(self.clip) if self.clip else None,
            "dynamic_images": dataclasses.asdict(self.dynamic_images) if self.dynamic_images else None,
            "predictor": {"file": predictor.name, "sha256": _file_sha256(str(predictor))},
        }

    @classmethod
    def from_dict(cls, recorded: Mapping[str, object], *, predictor: str | None = None) -> "PreprocessParams":
        """The params :meth:`as_dict` recorded (a cache's or a checkpoint's), to preprocess alike.

        The landmark model is not stored by path: ``predictor`` (None: the
        packaged one) must be the file whose sha256 was recorded.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(recorded) - fields)
        if unknown:
            raise ValueError(f"preprocessing params {unknown} are unknown to this fr-mer; update fr-mer")
        values = dict(recorded)
        nested = {"tvl1": TVL1Params, "align": AlignParams, "clip": ClipOptions,
                  "dynamic_images": DynamicImageOptions}
        for name, kind in nested.items():
            if isinstance(values.get(name), Mapping):
                values[name] = kind(**values[name])
        model = values.pop("predictor", None)
        params = cls(**values, predictor=predictor)
        if isinstance(model, Mapping) and model.get("sha256"):
            found = _file_sha256(str(params.predictor_path))
            if found != model["sha256"]:
                raise ValueError(
                    f"the recorded landmark model ({model.get('file')}, sha256 {str(model['sha256'])[:12]}...) "
                    f"is not {params.predictor_path} (sha256 {found[:12]}...); pass the recorded file"
                )
        return params

    def array_specs(self) -> dict[str, ArraySpec]:
        """The cache's array columns for these parameters (docs/cache-format.md)."""
        s, f = self.face_size, self.feature_size
        specs = {
            "flow": ArraySpec((3, f, f), "float32", {
                "channels": "u,v,strain",
                "normalisation": self.normalisation,
                "normalisation_description": NORMALISATIONS[self.normalisation],
                "flow_size": self.flow_size,
                "direction": "onset -> apex; u +x (right), v +y (down)",
            }),
            "onset_face": ArraySpec((s, s), "uint8", {"units": "grey level 0..255"}),
            "apex_face": ArraySpec((s, s), "uint8", {
                "units": "grey level 0..255",
                "transform": "the onset's (align_matrix), no head-motion compensation",
            }),
            "landmarks": ArraySpec((68, 2), "float32", {
                "units": "px (x, y) in onset_face; NaN when no face was found",
                "points": "dlib 68-point (iBUG 300-W), 0-based",
            }),
            "align_matrix": ArraySpec((2, 3), "float32", {
                "maps": "onset frame px (x, y, 1) -> onset_face px (x, y)",
            }),
        }
        if self.clip:
            c = self.clip
            specs["clip_frames"] = ArraySpec((c.length, c.size, c.size), "uint8", {
                "units": "grey level 0..255",
                "frames": "onset..offset, linear interpolation in time to `length` frames",
                "transform": "align_matrix scaled to the frame size",
            })
        if self.dynamic_images:
            d = self.dynamic_images
            specs["dynamic_images"] = ArraySpec((d.segments + 1, d.size, d.size), "float32", {
                "order": f"{d.segments} segment dynamic images, then the global one",
                "weights": "approximate rank pooling a_t = 2t - T - 1, times 6 / (T (T + 1))",
                "units": "grey levels of change over the window",
                "frames_per_segment": "all" if d.frames_per_segment is None else d.frames_per_segment,
            })
        return specs


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of what produced a cache (its ``software`` attribute)."""
    versions = {"python": platform.python_version(), "opencv": cv2.__version__}
    for label, dist in (
        ("fr-mer", "fr-mer"),
        ("dlib", "dlib-bin"),
        ("numpy", "numpy"),
        ("h5py", "h5py"),
        ("joblib", "joblib"),
        ("torch", "torch"),
    ):
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    import dlib
    import h5py

    versions["dlib"] = dlib.__version__
    versions["hdf5"] = h5py.version.hdf5_version
    return versions


# -- one sample ------------------------------------------------------------------

@dataclasses.dataclass
class Sample:
    """A finished sample: cache metadata (``flags`` a list), arrays, seconds per stage."""

    key: str
    meta: dict[str, object]
    arrays: dict[str, np.ndarray]
    timings: dict[str, float]
    repaired: bool = False
    cpu_seconds: float = 0.0  # CPU time of the worker on this sample (wall time is in timings)


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
    return image


def _frame_path(clip: Clip, number: int, role: str) -> Path:
    path = clip.frames.get(number)
    if path is None:
        found = f"{min(clip.frames)}..{max(clip.frames)}" if clip.frames else "none"
        raise SampleError(f"{clip.key}: {role} frame {number} has no file (frames on disk: {found})")
    return path


def is_pre_cropped(clip: Clip) -> bool:
    """Whether the clip's frames come from a cropped release (face fills the frame).

    CASME II's ``Cropped`` (``reg_img46.jpg``) and ``SMIC_all_cropped``: told by
    the release folder's name or the ``reg_`` file prefix.
    """
    path = next(iter(clip.frames.values()), None)
    if path is None:
        return False
    return path.name.lower().startswith("reg_") or any(
        part.lower() in _CROPPED_FOLDERS for part in Path(path).parts[:-1]
    )


class _TimedAligner(FaceAligner):
    """A FaceAligner that adds up the seconds spent detecting and fitting landmarks."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = {"detect": 0.0, "landmarks": 0.0}
        self._models()  # the 100 MB predictor: its load is setup, not a detection's cost

    def _detect(self, gray: np.ndarray, pre_cropped: bool):
        start = time.perf_counter()
        try:
            return super()._detect(gray, pre_cropped)
        finally:
            self.seconds["detect"] += time.perf_counter() - start

    def landmarks(self, gray: np.ndarray, *, pre_cropped: bool = False) -> np.ndarray | None:
        start, detect = time.perf_counter(), self.seconds["detect"]
        try:
            return super().landmarks(gray, pre_cropped=pre_cropped)
        finally:
            spent = time.perf_counter() - start - (self.seconds["detect"] - detect)
            self.seconds["landmarks"] += spent


# Aligners hold the 100 MB shape predictor: load it once per worker process.
_ALIGNERS: dict[tuple[AlignParams, str], _TimedAligner] = {}


def _aligner(params: PreprocessParams) -> _TimedAligner:
    key = (params.align, str(params.predictor_path))
    if key not in _ALIGNERS:
        _ALIGNERS.clear()
        _ALIGNERS[key] = _TimedAligner(params.align, predictor_path=params.predictor_path)
    return _ALIGNERS[key]


class _Clock:
    """Seconds per stage: ``with clock("flow"): ...``."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES[:-1], 0.0)
        self._stage = ""

    def __call__(self, stage: str) -> "_Clock":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._stage] += time.perf_counter() - self._start


def process_clip(clip: Clip, params: PreprocessParams) -> Sample:
    """Turn one clip into a cache sample (the stages are in the module docstring).

    Raises :class:`SampleError` with the reason when the clip cannot be used.
    Frames are read one at a time; whole frames are held together only to spot
    an SMIC apex (one SMIC clip: tens of 640x480 frames).
    """
    if not clip.usable:
        raise SampleError(f"{clip.key}: unusable in the scan: {clip.problem or 'no reason given'}")
    if clip.onset_frame is None or not clip.frames:
        raise SampleError(f"{clip.key}: no onset frame or no frame files")
    clock = _Clock()
    with clock("setup"):
        aligner = _aligner(params)
    cpu_start = time.process_time()
    flags: list[str] = []

    full: dict[int, np.ndarray] = {}
    pair: AlignedPair | None = None
    apex_frame = clip.apex_frame
    if apex_frame is None:
        apex_frame, pair = _spot(clip, params, aligner, full, clock)
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

    if pair is None:
        before = dict(aligner.seconds)
        with clock("align"):
            pair = aligner.align_pair(onset, apex, size=params.flow_size, pre_cropped=is_pre_cropped(clip))
        _move_aligner_time(aligner, before, clock, "align")
    flags.extend(pair.flags)

    before = dict(aligner.seconds)
    with clock("head_motion"):
        apex_flow_face, motion = compensate(
            pair.onset, pair.apex, pair.landmarks, params.head_motion, aligner=aligner
        )
    _move_aligner_time(aligner, before, clock, "head_motion")
    with clock("flow"):
        flow = tvl1_flow(pair.onset, apex_flow_face, params.tvl1)
    with clock("head_motion"):
        flow, motion_flow = compensate_flow(flow, pair.landmarks, params.head_motion)
    if params.head_motion != "none" and not (motion["applied"] or motion_flow["applied"]):
        flags.append("head_motion_skipped")
    with clock("strain"):
        u, v = flow[..., 0], flow[..., 1]
        strain = optical_strain(u, v)
    with clock("features"):
        features = flow_features(u, v, strain, size=params.feature_size, normalisation=params.normalisation)

    # The aligner's matrix maps a frame onto the flow_size crop; every stored
    # crop uses that same transform, scaled to its own size.
    matrix = np.asarray(pair.matrix, np.float64)
    face_scale = params.face_size / params.flow_size
    face_matrix = matrix * face_scale
    with clock("align"):
        if params.face_size == params.flow_size:
            onset_face, apex_face = pair.onset, pair.apex
        else:
            onset_face = aligner.warp(onset, face_matrix, params.face_size)
            apex_face = aligner.warp(apex, face_matrix, params.face_size)
    arrays: dict[str, np.ndarray] = {
        "flow": features,
        "onset_face": onset_face,
        "apex_face": apex_face,
        "landmarks": np.asarray(pair.landmarks, np.float64) * face_scale,
        "align_matrix": face_matrix,
    }
    if params.clip or params.dynamic_images:
        _clip_inputs(clip, params, aligner, matrix, full, onset.shape, arrays, clock, flags)
    full.clear()

    repaired = clip.status == REPAIRED
    if repaired:
        flags.append("repaired")
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
        "flags": _flags(flags),
    }
    return Sample(clip.key, meta, arrays, clock.seconds, repaired=repaired,
                  cpu_seconds=time.process_time() - cpu_start)


def _spot(
    clip: Clip, params: PreprocessParams, aligner: _TimedAligner, full: dict[int, np.ndarray], clock: _Clock
) -> tuple[int, AlignedPair | None]:
    """Spot the apex of a clip without one; returns it and, when it is exact, the aligned pair.

    The spotter measures motion on frames aligned with one matrix. The onset's
    matrix does not depend on the apex unless the onset has no face; then the
    pair is left to be aligned again with the spotted apex (None is returned).
    ``full`` receives the clip's frames, for the stages after.
    """
    _frame_path(clip, clip.onset_frame, "onset")
    numbers = sorted(clip.frames)
    with clock("read"):
        for number in numbers:
            full[number] = read_gray(clip.frames[number])
    _check_same_size(clip, full)
    onset_index = numbers.index(clip.onset_frame)
    offset_index = numbers.index(clip.offset_frame) if clip.offset_frame in full else len(numbers) - 1
    middle = full[numbers[(onset_index + offset_index + 1) // 2]]
    before = dict(aligner.seconds)
    with clock("align"):
        first = aligner.align_pair(full[clip.onset_frame], middle, size=params.flow_size,
                                   pre_cropped=is_pre_cropped(clip))
        aligned = [aligner.warp(full[n], first.matrix, params.flow_size) for n in numbers]
    _move_aligner_time(aligner, before, clock, "align")
    with clock("spot"):
        index = int(spot_apex(aligned, onset_index=onset_index, offset_index=offset_index))
    if first.flags:  # the transform came from the middle frame, not the onset
        return numbers[index], None
    pair = AlignedPair(onset=first.onset, apex=aligned[index], matrix=first.matrix,
                       landmarks=first.landmarks, flags=[])
    return numbers[index], pair


def _move_aligner_time(aligner: _TimedAligner, before: Mapping[str, float], clock: _Clock, stage: str) -> None:
    """Book detector and predictor time under their own stages, not ``stage``."""
    for name in ("detect", "landmarks"):
        spent = aligner.seconds[name] - before[name]
        clock.seconds[name] += spent
        clock.seconds[stage] -= spent


def _check_same_size(clip: Clip, frames: Mapping[int, np.ndarray]) -> None:
    shapes = {image.shape for image in frames.values()}
    if len(shapes) > 1:
        raise SampleError(f"{clip.key}: frames of different sizes {sorted(s[::-1] for s in shapes)}")


def _clip_inputs(
    clip: Clip,
    params: PreprocessParams,
    aligner: FaceAligner,
    matrix: np.ndarray,
    full: Mapping[int, np.ndarray],
    frame_shape: tuple[int, ...],
    arrays: dict[str, np.ndarray],
    clock: _Clock,
    flags: list[str],
) -> None:
    """``clip_frames`` and ``dynamic_images`` from the frames onset..offset.

    Each frame is read, warped to the small aligned crops and dropped, so a
    clip of SAMM's 2040x1088 frames never sits in memory at full size.
    """
    first = clip.onset_frame
    last = clip.offset_frame if clip.offset_frame is not None else max(clip.frames)
    numbers = [n for n in sorted(clip.frames) if first <= n <= last]
    if len(numbers) < 2:
        raise SampleError(f"{clip.key}: fewer than two frames from onset {first} to offset {last}")
    if len(numbers) < last - first + 1:
        flags.append("frames_missing")
    sizes = {}
    if params.clip:
        sizes["clip"] = params.clip.size
    if params.dynamic_images:
        sizes["dynamic_images"] = params.dynamic_images.size
    small: dict[str, list[np.ndarray]] = {name: [] for name in sizes}
    for number in numbers:
        with clock("read"):
            image = full.get(number)
            if image is None:
                image = read_gray(clip.frames[number])
        if image.shape != tuple(frame_shape):
            raise SampleError(
                f"{clip.frames[number]}: frame size {image.shape[::-1]} differs from the onset's "
                f"{tuple(frame_shape)[::-1]}"
            )
        with clock("align"):
            for name, size in sizes.items():
                small[name].append(aligner.warp(image, matrix * (size / params.flow_size), size))
    if params.clip:
        with clock("clip"):
            arrays["clip_frames"] = resample_clip(small["clip"], params.clip.length)
    if params.dynamic_images:
        d = params.dynamic_images
        with clock("dynamic_images"):
            stack = np.stack(small["dynamic_images"]).astype(np.float32)
            arrays["dynamic_images"] = dssi(stack, d.segments, frames_per_segment=d.frames_per_segment)


def _flags(flags: Iterable[str], width: int = 160) -> list[str]:
    """Unique flags, sorted, as many as fit the cache's ``flags`` column."""
    kept: list[str] = []
    for flag in sorted({f for f in flags if f}):
        if len(",".join([*kept, flag]).encode()) <= width:
            kept.append(flag)
    return kept


@dataclasses.dataclass
class Outcome:
    """What a worker sends back: a sample, or the reason there is none."""

    key: str
    sample: Sample | None
    reason: str = ""


def _work(clip: Clip, params: PreprocessParams) -> Outcome:
    """Worker entry point: one sample; a problem with it becomes a failure reason.

    OpenCV runs one thread per job, so ``--jobs`` is the number of busy cores.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return Outcome(clip.key, process_clip(clip, params))
    except SampleError as exc:
        return Outcome(clip.key, None, str(exc))
    except (cv2.error, OSError, ValueError, RuntimeError, IndexError, MemoryError) as exc:
        # One odd clip must not stop a run of hundreds: record it and go on.
        return Outcome(clip.key, None, f"{clip.key}: {type(exc).__name__}: {exc}")
    finally:
        cv2.setNumThreads(threads)


# -- the run -------------------------------------------------------------------

@dataclasses.dataclass
class PreprocessSummary:
    """Counts of a run and where its time went."""

    out: Path
    total: int = 0
    done: int = 0
    skipped: int = 0
    repaired: int = 0
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    flags: Counter = dataclasses.field(default_factory=Counter)
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall_seconds: float = 0.0
    jobs: int = 1
    cpu_seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.done / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def stage_fractions(self) -> dict[str, float]:
        """Share of each per-sample stage in their summed time (all workers; ``setup`` apart)."""
        per_sample = {k: v for k, v in self.stage_seconds.items() if k != "setup"}
        total = sum(per_sample.values())
        return {k: (v / total if total else 0.0) for k, v in per_sample.items()}

    def as_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "repaired": self.repaired,
            "failed": dict(self.failed),
            "flags": dict(self.flags),
            "stage_seconds": dict(self.stage_seconds),
            "wall_seconds": self.wall_seconds,
            "samples_per_second": self.samples_per_second,
            "jobs": self.jobs,
            "cpu_seconds": self.cpu_seconds,
        }

    def lines(self) -> list[str]:
        """The summary ``fr-mer preprocess`` prints."""
        out = [
            f"{self.out}: {self.done} done, {self.skipped} skipped (already cached), "
            f"{self.repaired} repaired, {len(self.failed)} failed "
            f"({self.total} clips, {self.wall_seconds:.1f} s, {self.jobs} job{'s' * (self.jobs > 1)})"
        ]
        if self.flags:
            out.append("flags: " + ", ".join(f"{k} {v}" for k, v in sorted(self.flags.items())))
        if self.done:
            fractions = self.stage_fractions()
            busy = [f"{k} {100 * v:.0f}%" for k, v in fractions.items() if self.stage_seconds[k] > 0]
            out.append(
                f"{self.samples_per_second:.2f} samples/s; time per stage: " + ", ".join(busy)
                + f" (plus {self.stage_seconds['setup']:.1f} s loading dlib's models)"
            )
        if self.failed:
            out.append("failed:")
            out.extend(f"  {key}: {reason}" for key, reason in sorted(self.failed.items()))
        return out


def default_jobs() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class PreprocessRun:
    """One resumable run: opening it opens the cache, iterating it makes the samples.

    ``for outcome in run: ...`` yields one :class:`Outcome` per sample made or
    failed, as they finish (``len(run)`` of them after the scan's unusable
    clips are recorded); ``run.summary`` holds the counts. Opening raises
    :class:`pipeline.cache.CacheError` when ``out`` was made with other
    parameters (or another schema) and ``overwrite`` is false, and ValueError
    when the clips were scanned with another SMIC apex rule than ``params``.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        out: str | Path,
        params: PreprocessParams,
        *,
        jobs: int | None = None,
        overwrite: bool = False,
    ) -> None:
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        clips = list(clips)
        self.params = params
        self.jobs = jobs or default_jobs()
        _check_apex_rule(clips, params.smic_apex)
        self.summary = PreprocessSummary(out=Path(out), total=len(clips), jobs=self.jobs)
        self.writer = CacheWriter(
            out,
            params=params.as_dict(),
            arrays=params.array_specs(),
            software=software_versions(),
            overwrite=overwrite,
        )
        done = self.writer.done_keys()
        self.unusable: list[tuple[str, str]] = []
        self.todo: list[Clip] = []
        seen: set[str] = set()
        for clip in clips:
            key = clip.key
            if key in seen:
                where = f" ({clip.source} row {clip.row})" if clip.source else ""
                self.unusable.append((key, f"{key}: listed twice{where}; the first is kept"))
                continue
            seen.add(key)
            if key in done:
                self.summary.skipped += 1
            elif not clip.usable:
                self.unusable.append((key, f"unusable in the scan: {clip.problem or 'no reason given'}"))
            else:
                self.todo.append(clip)

    def __len__(self) -> int:
        """Samples this run will try to make (the progress bar's length)."""
        return len(self.todo)

    def __enter__(self) -> "PreprocessRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()

    def __iter__(self) -> Iterator[Outcome]:
        start = time.perf_counter()
        try:
            for key, reason in self.unusable:
                if key not in self.summary.failed:
                    self.writer.append_failure(key, reason)
                    self.summary.failed[key] = reason
            jobs = min(self.jobs, len(self.todo))
            if jobs <= 1:
                # In-process: no worker start-up, and the caller's debugger works.
                results: Iterable[Outcome] = (_work(clip, self.params) for clip in self.todo)
            else:
                from joblib import Parallel, delayed

                results = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(
                    delayed(_work)(clip, self.params) for clip in self.todo
                )
            for outcome in results:
                self._record(outcome)
                yield outcome
        finally:
            self.summary.wall_seconds = time.perf_counter() - start
            self.close()

    def _record(self, outcome: Outcome) -> None:
        summary = self.summary
        if outcome.sample is None:
            self.writer.append_failure(outcome.key, outcome.reason)
            summary.failed[outcome.key] = outcome.reason
            return
        sample = outcome.sample
        start = time.perf_counter()
        try:
            self.writer.append(sample.meta, sample.arrays)
        except CacheError as error:  # e.g. a clip name too long for its column
            self.writer.append_failure(outcome.key, str(error))
            summary.failed[outcome.key] = str(error)
            return
        summary.stage_seconds["write"] += time.perf_counter() - start
        for stage, seconds in sample.timings.items():
            summary.stage_seconds[stage] += seconds
        summary.done += 1
        summary.cpu_seconds += sample.cpu_seconds
        summary.repaired += int(sample.repaired)
        summary.flags.update(sample.meta["flags"])

    def run(self, progress: Callable[[Outcome], None] | None = None) -> PreprocessSummary:
        """Make every sample; ``progress`` is called after each one."""
        for outcome in self:
            if progress is not None:
                progress(outcome)
        return self.summary


def _check_apex_rule(clips: Sequence[Clip], smic_apex: str) -> None:
    """SMIC clips must have been scanned with the rule the cache will record."""
    other = sorted({
        c.apex_rule for c in clips
        if c.dataset == "smic" and c.apex_rule in SMIC_APEX_RULES and c.apex_rule != smic_apex
    })
    if other:
        raise ValueError(
            f"SMIC clips were scanned with apex rule {', '.join(other)} but the parameters say "
            f"smic_apex={smic_apex!r}; scan and preprocess with the same --smic-apex"
        )


def preprocess(
    clips: Sequence[Clip],
    out: str | Path,
    params: PreprocessParams | None = None,
    *,
    jobs: int | None = None,
    overwrite: bool = False,
    progress: Callable[[Outcome], None] | None = None,
) -> PreprocessSummary:
    """Make (or complete) the cache ``out`` from ``clips``; returns the run's summary."""
    run = PreprocessRun(clips, out, params or PreprocessParams(), jobs=jobs, overwrite=overwrite)
    return run.run(progress)
