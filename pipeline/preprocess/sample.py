"""One sample's computation, a pure function of its frames and the parameters.

:func:`process_pair` takes the onset and apex frames (arrays, already read) and,
for the clip models' inputs, the clip's frames onset..offset; it reads no file and
knows no :class:`~fr_mer.pipeline.clips.Clip`. Its stages (timed, :data:`STAGES`):

1. ``detect``, ``landmarks``, ``align``: one similarity transform found on the
   onset frame (:meth:`pipeline.align.FaceAligner.align_pair`, fallbacks and
   flags there), applied alike to the apex and to every clip frame, so
   alignment adds no motion of its own.
2. ``head_motion``: compensation of the head's own movement
   (:mod:`fr_mer.pipeline.headmotion`: ``rigid`` registers the apex before the flow,
   ``nose_flow`` and ``rigid_flow`` subtract a fitted head motion after it).
3. ``clip``, ``dynamic_images`` (only when asked): every clip frame is warped by
   the same transform to a small crop and dropped; the clip is resampled to T
   frames (``clip_frames``) and/or turned into DSSI dynamic images.
4. ``flow``, ``strain``, ``features``: TV-L1 onset -> apex on the aligned face
   at ``flow_size`` (``params.flow_implementation``: OpenCV's or the torch port),
   optical strain, and the model input ``flow`` = (u, v, strain) resized to
   ``feature_size`` and normalised.

:func:`process_pair` is :func:`prepare_pair` (stages 1-3 and the head-motion
stage on the apex), the flow, then :func:`finish_pair` (the head-motion stage on
the flow, strain, features): a run with the torch TV-L1 calls the two halves in
its workers and computes the flows between them, many pairs at once.

Every stored crop covers the flow crop's face region exactly: its matrix is the
flow crop's, rescaled with :func:`pipeline.align.rescale_matrix` (pixel centres
kept), and the landmarks with :func:`pipeline.align.rescale_points`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from fr_mer.errors import FrMerError
from fr_mer.pipeline.align import AlignedPair, AlignParams, FaceAligner, rescale_matrix, rescale_points
from fr_mer.pipeline.cache import FLAGS_WIDTH
from fr_mer.pipeline.flow import flow_features, optical_strain, tvl1_flows
from fr_mer.pipeline.frame_checks import content_flags
from fr_mer.pipeline.headmotion import compensate, compensate_flow
from fr_mer.pipeline.preprocess.params import PreprocessParams
from fr_mer.pipeline.spotting import face_region, spot_apex
from fr_mer.pipeline.temporal import dssi, resample_clip

#: Timed stages of one sample, in pipeline order. ``setup`` is loading dlib's
#: models, once per worker process; ``read`` and ``spot`` belong to
#: :func:`~fr_mer.pipeline.preprocess.clip.process_clip`; ``write`` is timed in the main process.
STAGES = (
    "setup", "read", "spot", "detect", "landmarks", "align", "head_motion",
    "flow", "strain", "features", "clip", "dynamic_images", "write",
)


class SampleError(FrMerError, RuntimeError):
    """A sample that cannot be made; the message names the clip or file and the problem."""


@dataclasses.dataclass
class PairSample:
    """What :func:`process_pair` makes: the cache's array columns, flags, seconds per stage."""

    arrays: dict[str, np.ndarray]
    flags: list[str]
    timings: dict[str, float]


class StageClock:
    """Seconds per stage: ``with clock("flow"): ...``."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES[:-1], 0.0)
        self._stage = ""

    def __call__(self, stage: str) -> "StageClock":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._stage] += time.perf_counter() - self._start

    def add(self, seconds: Mapping[str, float]) -> None:
        for stage, value in seconds.items():
            self.seconds[stage] += value


class TimedAligner(FaceAligner):
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

    def book(self, before: Mapping[str, float], clock: StageClock, stage: str) -> None:
        """Move the detector and predictor time spent since ``before`` from ``stage`` to their own stages."""
        for name in ("detect", "landmarks"):
            spent = self.seconds[name] - before[name]
            clock.seconds[name] += spent
            clock.seconds[stage] -= spent


# Aligners hold the 100 MB shape predictor: load it once per worker process.
_ALIGNERS: dict[tuple[AlignParams, str], TimedAligner] = {}


def aligner_for(params: PreprocessParams) -> TimedAligner:
    """This process's aligner for ``params`` (made, and its models loaded, on first use)."""
    key = (params.align, str(params.predictor_path))
    if key not in _ALIGNERS:
        _ALIGNERS.clear()
        _ALIGNERS[key] = TimedAligner(params.align, predictor_path=params.predictor_path)
    return _ALIGNERS[key]


@dataclasses.dataclass
class SpottedApex:
    """What :func:`spot_pair` found: the apex's index into the frames given, and the onset/apex
    pair aligned at ``flow_size`` when it is exact (None when the transform came from another
    frame than the onset: the pair is then aligned again)."""

    index: int
    aligned: AlignedPair | None


def spot_pair(frames: Sequence[np.ndarray], onset_index: int, offset_index: int, params: PreprocessParams, *,
              pre_cropped: bool = False, clock: StageClock | None = None) -> SpottedApex:
    """Spot the apex among ``frames[onset_index..offset_index]``, as preprocessing does for a clip
    without one (``--smic-apex spot``).

    The spotter (:func:`pipeline.spotting.spot_apex`) measures motion on frames aligned with one
    matrix, over the face's region: the pair (onset, middle frame) is aligned at ``flow_size``
    (the transform is the onset's unless the onset has no face), every frame is warped with its
    matrix, and the region is the box of the landmarks it found (the whole crop without them).
    ``frames``: (H, W) grayscale frames of one size, in time order. ``clock``: books the
    seconds under ``align``, ``detect``, ``landmarks`` and ``spot``.
    """
    if not 0 <= onset_index < offset_index < len(frames):
        raise SampleError(f"need 0 <= onset ({onset_index}) < offset ({offset_index}) < {len(frames)} frames "
                          "to spot an apex between them")
    clock = clock or StageClock()
    with clock("setup"):
        aligner = aligner_for(params)
    middle = frames[(onset_index + offset_index + 1) // 2]
    before = dict(aligner.seconds)
    with clock("align"):
        first = aligner.align_pair(frames[onset_index], middle, size=params.flow_size, pre_cropped=pre_cropped)
        aligned = [aligner.warp(frame, first.matrix, params.flow_size) for frame in frames]
    aligner.book(before, clock, "align")
    with clock("spot"):
        index = int(spot_apex(aligned, onset_index=onset_index, offset_index=offset_index,
                              region=face_region(first.landmarks, aligned[0].shape)))
    if first.flags:  # the transform came from the middle frame, not the onset
        return SpottedApex(index, None)
    return SpottedApex(index, AlignedPair(onset=first.onset, apex=aligned[index], matrix=first.matrix,
                                          landmarks=first.landmarks, flags=[]))


@dataclasses.dataclass
class PendingPair:
    """A sample made up to its flow (:func:`prepare_pair`); :func:`finish_pair` completes it.

    ``onset`` and ``apex`` are the (flow_size, flow_size) crops the flow is taken
    between (the apex registered to the onset for ``head_motion="rigid"``);
    ``arrays`` every cache column but ``flow``.
    """

    onset: np.ndarray
    apex: np.ndarray
    landmarks: np.ndarray
    motion_applied: bool
    arrays: dict[str, np.ndarray]
    flags: list[str]
    timings: dict[str, float]


def process_pair(
    onset: np.ndarray,
    apex: np.ndarray,
    params: PreprocessParams,
    *,
    clip_frames: Iterable[np.ndarray] | None = None,
    pre_cropped: bool = False,
    aligned: AlignedPair | None = None,
) -> PairSample:
    """The cache arrays of one onset/apex pair (the stages are in the module docstring).

    :func:`prepare_pair`, the flow with ``params.flow_implementation`` (torch on
    the CPU), then :func:`finish_pair`.

    Args:
        onset, apex: (H, W) grayscale frames of one size.
        params: the preprocessing parameters.
        clip_frames: the frames onset..offset, in order (an iterator is consumed
            one frame at a time, so a clip of large frames never sits in memory);
            needed only when ``params`` ask for ``clip_frames`` or ``dynamic_images``.
        pre_cropped: the frames come from a cropped release (face fills the
            frame): adds a padded detection try (:class:`pipeline.align.AlignParams`).
        aligned: the pair already aligned at ``flow_size`` (the apex spotter's),
            to skip finding the transform again.

    Raises :class:`SampleError` when the frames cannot make a sample.
    """
    pending = prepare_pair(onset, apex, params, clip_frames=clip_frames, pre_cropped=pre_cropped, aligned=aligned)
    start = time.perf_counter()
    (flow,) = tvl1_flows([pending.onset], [pending.apex], params.tvl1, implementation=params.flow_implementation)
    return finish_pair(pending, flow, params, flow_seconds=time.perf_counter() - start)


def prepare_pair(
    onset: np.ndarray,
    apex: np.ndarray,
    params: PreprocessParams,
    *,
    clip_frames: Iterable[np.ndarray] | None = None,
    pre_cropped: bool = False,
    aligned: AlignedPair | None = None,
) -> PendingPair:
    """Every stage of :func:`process_pair` before the flow (same arguments): alignment, the
    head-motion stage on the apex crop, the stored crops and the clip models' inputs."""
    onset, apex = np.asarray(onset), np.asarray(apex)
    if onset.shape != apex.shape:
        raise SampleError(f"onset {onset.shape[::-1]} and apex {apex.shape[::-1]} frames differ in size")
    clock = StageClock()
    with clock("setup"):
        aligner = aligner_for(params)
    flags: list[str] = content_flags(onset, "onset") + content_flags(apex, "apex")
    if aligned is None:
        before = dict(aligner.seconds)
        with clock("align"):
            aligned = aligner.align_pair(onset, apex, size=params.flow_size, pre_cropped=pre_cropped)
        aligner.book(before, clock, "align")
    flags.extend(aligned.flags)

    before = dict(aligner.seconds)
    with clock("head_motion"):
        apex_flow_face, motion = compensate(
            aligned.onset, aligned.apex, aligned.landmarks, params.head_motion, aligner=aligner
        )
    aligner.book(before, clock, "head_motion")

    # The aligner's matrix maps a frame onto the flow_size crop; every stored
    # crop is that same face region at its own size.
    face_matrix = rescale_matrix(aligned.matrix, params.flow_size, params.face_size)
    with clock("align"):
        if params.face_size == params.flow_size:
            onset_face, apex_face = aligned.onset, aligned.apex
        else:
            onset_face = aligner.warp(onset, face_matrix, params.face_size)
            apex_face = aligner.warp(apex, face_matrix, params.face_size)
    arrays: dict[str, np.ndarray] = {
        "onset_face": onset_face,
        "apex_face": apex_face,
        "landmarks": rescale_points(aligned.landmarks, params.flow_size, params.face_size),
        "align_matrix": face_matrix,
    }
    if params.clip or params.dynamic_images:
        if clip_frames is None:
            raise SampleError("the parameters ask for clip inputs (clip_frames, dynamic_images) "
                              "but no clip frames were given")
        arrays.update(_clip_inputs(clip_frames, params, aligner, aligned.matrix, onset.shape, clock))
    return PendingPair(onset=aligned.onset, apex=apex_flow_face, landmarks=aligned.landmarks,
                       motion_applied=bool(motion["applied"]), arrays=arrays, flags=flags, timings=clock.seconds)


def finish_pair(pending: PendingPair, flow: np.ndarray, params: PreprocessParams, *,
                flow_seconds: float = 0.0) -> PairSample:
    """The sample of ``pending`` given its (flow_size, flow_size, 2) TV-L1 flow onset -> apex:
    the head-motion stage on the flow, the strain and the ``flow`` model input.

    ``flow_seconds``: the time the flow took (its ``flow`` stage; a batch's share).
    """
    clock = StageClock()
    clock.add(pending.timings)
    clock.seconds["flow"] += flow_seconds
    flags = list(pending.flags)
    with clock("head_motion"):
        flow, motion_flow = compensate_flow(flow, pending.landmarks, params.head_motion)
    if params.head_motion != "none" and not (pending.motion_applied or motion_flow["applied"]):
        flags.append("head_motion_skipped")
    with clock("strain"):
        u, v = flow[..., 0], flow[..., 1]
        strain = optical_strain(u, v)
    with clock("features"):
        features = flow_features(u, v, strain, size=params.feature_size, normalisation=params.normalisation)
    return PairSample({"flow": features, **pending.arrays}, flags, clock.seconds)


def _timed(frames: Iterable[np.ndarray], clock: StageClock, stage: str) -> Iterator[np.ndarray]:
    """``frames`` one by one, the time spent producing each (e.g. reading it) booked under ``stage``."""
    iterator = iter(frames)
    while True:
        with clock(stage):
            frame = next(iterator, None)
        if frame is None:
            return
        yield frame


def _clip_inputs(
    frames: Iterable[np.ndarray],
    params: PreprocessParams,
    aligner: FaceAligner,
    matrix: np.ndarray,
    frame_shape: tuple[int, ...],
    clock: StageClock,
) -> dict[str, np.ndarray]:
    """``clip_frames`` and ``dynamic_images`` from the frames onset..offset.

    Each frame is warped to the small aligned crops and dropped, so a clip of
    SAMM's 2040x1088 frames never sits in memory at full size.
    """
    sizes = {}
    if params.clip:
        sizes["clip"] = params.clip.size
    if params.dynamic_images:
        sizes["dynamic_images"] = params.dynamic_images.size
    matrices = {name: rescale_matrix(matrix, params.flow_size, size) for name, size in sizes.items()}
    small: dict[str, list[np.ndarray]] = {name: [] for name in sizes}
    for index, image in enumerate(_timed(frames, clock, "read")):
        image = np.asarray(image)
        if image.shape != tuple(frame_shape):
            raise SampleError(
                f"clip frame {index}: size {image.shape[::-1]} differs from the onset's {tuple(frame_shape)[::-1]}"
            )
        with clock("align"):
            for name, size in sizes.items():
                small[name].append(aligner.warp(image, matrices[name], size))
    if len(small[next(iter(sizes))]) < 2:
        raise SampleError("fewer than two clip frames from onset to offset")
    arrays = {}
    if params.clip:
        with clock("clip"):
            arrays["clip_frames"] = resample_clip(small["clip"], params.clip.length)
    if params.dynamic_images:
        d = params.dynamic_images
        with clock("dynamic_images"):
            stack = np.stack(small["dynamic_images"]).astype(np.float32)
            arrays["dynamic_images"] = dssi(stack, d.segments, frames_per_segment=d.frames_per_segment)
    return arrays


def cache_flags(flags: Iterable[str], width: int = FLAGS_WIDTH) -> list[str]:
    """Unique flags, sorted, as many as fit the cache's ``flags`` column."""
    kept: list[str] = []
    for flag in sorted({f for f in flags if f}):
        if len(",".join([*kept, flag]).encode()) <= width:
            kept.append(flag)
    return kept
