"""Apex spotting for clips without an apex annotation (SMIC-HS, a user's own clip).

Rule (``reference="onset_offset"``, the default):

1. every frame is shrunk so that its longest side is ``size`` pixels (INTER_AREA);
2. the *local motion* between two frames a and b is the mean, over the face
   region (``region``: the landmarks' box with 15 % of its height added above,
   :func:`face_region`; the whole frame without one), of
   |flow(a -> b) - median flow(a -> b) over that region|, with OpenCV's Farneback
   flow (cheap, sub-pixel) on the whole frame: subtracting the median removes the
   head's translation, so what remains is the motion of parts of the face against
   the rest;
3. the score of frame t is local_motion(onset, t) + local_motion(offset, t),
   smoothed over time by a centred moving average of ``window`` frames (ends
   repeated; at most half the clip, odd, so that a short clip keeps its peak);
4. the apex is the frame of highest score between onset and offset (the first on ties).

Why both ends: a micro-expression leaves the face at the onset and returns to
it by the offset, so both terms grow towards the apex, while the error that
a head drift leaves in either term (it grows with the displacement) rises in
one as it falls in the other. On synthetic clips (tests/test_spotting.py) with
a drift of 2 px across the clip the rule finds the peak within a frame; the
motion from the onset alone (``reference="onset"``) picks the drifted last
frames instead.

Why the face region and a 9-frame window: on the 117 real CASME II clips of the
development set (15 subjects, 200 fps; docs/spotting-real.md) the whole frame's
mean over a 5-frame window found the sheet's apex within 5 frames in 44 % of the
clips, worse than taking the middle frame (50 %): a registered crop's borders
(filled by replicated edge pixels) and the background add flow noise that swamps
a motion of a pixel or less. Measured on the face region, with the median taken
there, and smoothed over 9 frames, 69 % of the clips are within 5 frames.

Frames should be the clip's frames aligned with one matrix (the onset's), e.g.
``FaceAligner.warp(frame, pair.matrix, size)`` for every frame, so that the
motion measured is the face's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

REFERENCES = ("onset_offset", "onset")

#: cv2.calcOpticalFlowFarneback(prev, next, None, *FARNEBACK) for ~64 px faces:
#: pyramid scale, levels, window, iterations, poly_n, poly_sigma, flags.
FARNEBACK = (0.5, 3, 9, 3, 5, 1.1, 0)


#: A region of a frame, pixels: (x0, y0, x1, y1), x1 and y1 excluded.
Region = tuple[int, int, int, int]

#: Share of the landmarks' box height added above it (the brows move; the forehead with them).
FOREHEAD = 0.15


def face_region(landmarks: np.ndarray, shape: tuple[int, int]) -> Region | None:
    """The face's box in a frame: the (68, 2) landmarks' box with :data:`FOREHEAD` of its height
    added above, inside the frame of ``shape`` (H, W); None when the landmarks are NaN (no face)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.size == 0 or not np.isfinite(points).all():
        return None
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    y0 -= FOREHEAD * (y1 - y0)
    h, w = shape
    box = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))), min(w, int(np.ceil(x1)) + 1),
           min(h, int(np.ceil(y1)) + 1))
    return box if box[2] - box[0] >= 2 and box[3] - box[1] >= 2 else None


def _prepare(frames: Sequence[np.ndarray], size: int) -> tuple[list[np.ndarray], float]:
    """The frames shrunk to ``size`` (uint8), and the scale they were shrunk by (1: not shrunk)."""
    shape = np.shape(frames[0])
    out = []
    scale = 1.0
    for i, frame in enumerate(frames):
        f = np.asarray(frame)
        if f.ndim != 2 or f.shape != shape:
            raise ValueError(f"frame {i} has shape {f.shape}; all frames must be grayscale {shape}")
        if f.dtype != np.uint8:
            f = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        scale = min(1.0, size / max(f.shape))
        if scale < 1:
            f = cv2.resize(f, (max(1, round(f.shape[1] * scale)), max(1, round(f.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(f))
    return out, scale


def _scaled(region: Region | None, scale: float, shape: tuple[int, ...]) -> Region:
    """``region`` of the full-size frames on the frames shrunk by ``scale`` (``shape``); the whole frame for None."""
    h, w = shape[:2]
    if region is None:
        return 0, 0, w, h
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        raise ValueError(f"region must be (x0, y0, x1, y1) with 0 <= x0 < x1 and 0 <= y0 < y1, got {region}")
    box = (int(x0 * scale), int(y0 * scale), min(w, int(np.ceil(x1 * scale))), min(h, int(np.ceil(y1 * scale))))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise ValueError(f"region {region} lies outside the frames")
    return box


def local_motion(a: np.ndarray, b: np.ndarray, region: Region | None = None) -> float:
    """Mean |flow(a -> b) - median flow| in pixels over ``region`` (x0, y0, x1, y1; None: the whole
    frame), the median taken over the same region: the motion left after the global translation."""
    flow = cv2.calcOpticalFlowFarneback(a, b, None, *FARNEBACK)
    x0, y0, x1, y1 = (0, 0, flow.shape[1], flow.shape[0]) if region is None else region
    inside = flow[y0:y1, x0:x1].reshape(-1, 2)
    return float(np.linalg.norm(inside - np.median(inside, axis=0), axis=-1).mean())


def motion_scores(frames: Sequence[np.ndarray], onset_index: int = 0, offset_index: int | None = None, *,
                  reference: str = "onset_offset", size: int = 64, window: int = 9,
                  region: Region | None = None) -> np.ndarray:
    """Per-frame score of :func:`spot_apex` (before its argmax), float64 (T,); -inf outside [onset, offset]."""
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; choose one of {list(REFERENCES)}")
    n = len(frames)
    if n == 0:
        raise ValueError("spot_apex needs at least one frame")
    offset_index = n - 1 if offset_index is None else offset_index
    if not 0 <= onset_index <= offset_index < n:
        raise ValueError(f"need 0 <= onset_index ({onset_index}) <= offset_index ({offset_index}) < {n} frames")
    if window < 1 or size < 16:
        raise ValueError(f"window must be >= 1 frame and size >= 16 pixels, got {window} and {size}")
    small, scale = _prepare(frames, size)
    box = _scaled(region, scale, small[0].shape)
    span = range(onset_index, offset_index + 1)
    raw = np.array([local_motion(small[onset_index], small[t], box) for t in span])
    if reference == "onset_offset":
        raw += np.array([local_motion(small[offset_index], small[t], box) for t in span])
    # a window longer than half the clip would smooth its peak away (SMIC's shortest clips)
    window = min(window, max(1, len(raw) // 2) | 1)
    half = window // 2
    padded = np.pad(raw, (half, window - 1 - half), mode="edge")
    scores = np.full(n, -np.inf)
    scores[onset_index:offset_index + 1] = np.convolve(padded, np.ones(window) / window, mode="valid")
    return scores


def spot_apex(frames: Sequence[np.ndarray], onset_index: int = 0, offset_index: int | None = None, *,
              reference: str = "onset_offset", size: int = 64, window: int = 9,
              region: Region | None = None) -> int:
    """Index (into ``frames``) of the spotted apex, by the rule in this module's docstring.

    Args:
        frames: the clip's grayscale (H, W) frames in time order, aligned with one matrix.
        onset_index, offset_index: the clip's onset and offset (default: the last frame).
        reference: ``"onset_offset"`` (default) or ``"onset"`` (motion from the onset only).
        size: longest side, pixels, the frames are shrunk to before the flow.
        window: length of the temporal moving average, frames (1: none; at most half the clip).
        region: the face's box (x0, y0, x1, y1) in the frames' pixels (:func:`face_region`);
            None measures the whole frame.
    """
    scores = motion_scores(frames, onset_index, offset_index, reference=reference, size=size, window=window,
                           region=region)
    return int(np.argmax(scores))


@dataclasses.dataclass(frozen=True)
class SpottingErrors:
    """How far spotted apexes fall from annotated ones, in frames (|spotted - annotated|).

    ``within``: tolerance in frames -> the share of clips whose error is at most that.
    """

    n: int
    median: float
    mean: float
    within: dict[int, float]

    def as_dict(self) -> dict[str, object]:
        return {"n": self.n, "median": self.median, "mean": self.mean,
                "within": {str(k): v for k, v in self.within.items()}}


def spotting_errors(spotted: Sequence[int], annotated: Sequence[int],
                    tolerances: Sequence[int] = (5, 10)) -> SpottingErrors:
    """The frame errors of ``spotted`` apexes against ``annotated`` ones (same clips, same order).

    At CASME II's and SAMM's 200 fps a frame is 5 ms: within 5 frames is within 25 ms.
    """
    spotted_frames, annotated_frames = np.asarray(spotted, dtype=np.int64), np.asarray(annotated, dtype=np.int64)
    if spotted_frames.shape != annotated_frames.shape or spotted_frames.ndim != 1 or not len(spotted_frames):
        raise ValueError(f"need as many spotted as annotated apexes, at least one; got {spotted_frames.shape} "
                         f"and {annotated_frames.shape}")
    if any(t < 0 for t in tolerances):
        raise ValueError(f"tolerances are frames >= 0, got {list(tolerances)}")
    error = np.abs(spotted_frames - annotated_frames)
    return SpottingErrors(n=int(error.size), median=float(np.median(error)), mean=float(error.mean()),
                          within={int(t): float((error <= t).mean()) for t in tolerances})
