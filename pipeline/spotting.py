"""Apex spotting for clips without an apex annotation (SMIC-HS).

Rule (``reference="onset_offset"``, the default):

1. every frame is shrunk so that its longest side is ``size`` pixels (INTER_AREA);
2. the *local motion* between two frames a and b is the mean, over the frame,
   of |flow(a -> b) - median flow(a -> b)|, with OpenCV's Farneback flow (cheap,
   sub-pixel): subtracting the median removes the head's translation, so what
   remains is the motion of parts of the face against the rest;
3. the score of frame t is local_motion(onset, t) + local_motion(offset, t),
   smoothed over time by a centred moving average of ``window`` frames (ends
   repeated);
4. the apex is the frame of highest score between onset and offset (the first on ties).

Why both ends: a micro-expression leaves the face at the onset and returns to
it by the offset, so both terms grow towards the apex, while the error that
a head drift leaves in either term (it grows with the displacement) rises in
one as it falls in the other. On synthetic clips (tests/test_spotting.py) with
a drift of 2 px across the clip the rule finds the peak within a frame; the
motion from the onset alone (``reference="onset"``) picks the drifted last
frames instead.

Frames should be the clip's frames aligned with one matrix (the onset's), e.g.
``FaceAligner.warp(frame, pair.matrix, size)`` for every frame, so that the
motion measured is the face's.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

REFERENCES = ("onset_offset", "onset")

#: cv2.calcOpticalFlowFarneback(prev, next, None, *FARNEBACK) for ~64 px faces:
#: pyramid scale, levels, window, iterations, poly_n, poly_sigma, flags.
FARNEBACK = (0.5, 3, 9, 3, 5, 1.1, 0)


def _prepare(frames: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    shape = np.shape(frames[0])
    out = []
    for i, frame in enumerate(frames):
        f = np.asarray(frame)
        if f.ndim != 2 or f.shape != shape:
            raise ValueError(f"frame {i} has shape {f.shape}; all frames must be grayscale {shape}")
        if f.dtype != np.uint8:
            f = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        scale = size / max(f.shape)
        if scale < 1:
            f = cv2.resize(f, (max(1, round(f.shape[1] * scale)), max(1, round(f.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(f))
    return out


def local_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |flow(a -> b) - median flow| in pixels: the motion left after the global translation."""
    flow = cv2.calcOpticalFlowFarneback(a, b, None, *FARNEBACK)
    return float(np.linalg.norm(flow - np.median(flow.reshape(-1, 2), axis=0), axis=-1).mean())


def motion_scores(frames: Sequence[np.ndarray], onset_index: int = 0, offset_index: int | None = None, *,
                  reference: str = "onset_offset", size: int = 64, window: int = 5) -> np.ndarray:
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
    small = _prepare(frames, size)
    span = range(onset_index, offset_index + 1)
    raw = np.array([local_motion(small[onset_index], small[t]) for t in span])
    if reference == "onset_offset":
        raw += np.array([local_motion(small[offset_index], small[t]) for t in span])
    half = window // 2
    padded = np.pad(raw, (half, window - 1 - half), mode="edge")
    scores = np.full(n, -np.inf)
    scores[onset_index:offset_index + 1] = np.convolve(padded, np.ones(window) / window, mode="valid")
    return scores


def spot_apex(frames: Sequence[np.ndarray], onset_index: int = 0, offset_index: int | None = None, *,
              reference: str = "onset_offset", size: int = 64, window: int = 5) -> int:
    """Index (into ``frames``) of the spotted apex, by the rule in this module's docstring.

    Args:
        frames: the clip's grayscale (H, W) frames in time order, aligned with one matrix.
        onset_index, offset_index: the clip's onset and offset (default: the last frame).
        reference: ``"onset_offset"`` (default) or ``"onset"`` (motion from the onset only).
        size: longest side, pixels, the frames are shrunk to before the flow.
        window: length of the temporal moving average, frames (1: none).
    """
    scores = motion_scores(frames, onset_index, offset_index, reference=reference, size=size, window=window)
    return int(np.argmax(scores))
