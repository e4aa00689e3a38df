"""Apex spotting for clips without an apex annotation (SMIC-HS).

Rule (``reference="onset_offset"``, the default): blur every frame (Gaussian,
``blur_sigma`` pixels) so that sensor noise does not count as motion; score
each frame t by D(t, onset) + D(t, offset), where D is the mean absolute grey
difference; smooth the scores over time with a centred moving average of
``window`` frames; the apex is the highest score between onset and offset
(the first one on ties).

Why both ends: a micro-expression leaves the face at the onset and returns to
it by the offset, so both differences grow towards the apex; a slow head drift
across the clip raises D(t, onset) as much as it lowers D(t, offset), so their
sum stays flat and the drift is not taken for the apex, while the rule
"largest difference from the onset" (``reference="onset"``) would pick the
last frame of a drifting clip.

Frames should be the clip's frames aligned with one matrix (the onset's), e.g.
``FaceAligner.warp(frame, pair.matrix, size)`` for every frame, so that the
scores measure the face.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

REFERENCES = ("onset_offset", "onset")


def motion_scores(frames: Sequence[np.ndarray], onset_index: int = 0, offset_index: int | None = None, *,
                  reference: str = "onset_offset", blur_sigma: float = 1.0, window: int = 5) -> np.ndarray:
    """Per-frame motion score of :func:`spot_apex` (before its argmax), float64 (T,).

    Frames outside [onset_index, offset_index] score -inf.
    """
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; choose one of {list(REFERENCES)}")
    n = len(frames)
    if n == 0:
        raise ValueError("spot_apex needs at least one frame")
    offset_index = n - 1 if offset_index is None else offset_index
    if not 0 <= onset_index <= offset_index < n:
        raise ValueError(f"need 0 <= onset_index ({onset_index}) <= offset_index ({offset_index}) < {n} frames")
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    shape = np.shape(frames[onset_index])
    blurred = []
    for i, frame in enumerate(frames):
        f = np.asarray(frame, dtype=np.float32)
        if f.ndim != 2 or f.shape != shape:
            raise ValueError(f"frame {i} has shape {f.shape}; all frames must be grayscale {shape}")
        blurred.append(cv2.GaussianBlur(f, (0, 0), blur_sigma) if blur_sigma > 0 else f)
    span = range(onset_index, offset_index + 1)
    raw = np.array([np.mean(np.abs(blurred[t] - blurred[onset_index])) for t in span])
    if reference == "onset_offset":
        raw += np.array([np.mean(np.abs(blurred[t] - blurred[offset_index])) for t in span])
    # moving average with the ends repeated, so the edge frames are not penalised
    half = window // 2
    padded = np.pad(raw, (half, window - 1 - half), mode="edge")
    smooth = np.convolve(padded, np.ones(window) / window, mode="valid")
    scores = np.full(n, -np.inf)
    scores[onset_index:offset_index + 1] = smooth
    return scores


def spot_apex(frames: Sequence[np.ndarray], onset_index: int = 0, offset_index: int | None = None, *,
              reference: str = "onset_offset", blur_sigma: float = 1.0, window: int = 5) -> int:
    """Index (into ``frames``) of the spotted apex, by the rule in this module's docstring.

    Args:
        frames: the clip's grayscale (H, W) frames in time order, aligned with one matrix.
        onset_index, offset_index: the clip's onset and offset (default: the last frame).
        reference: ``"onset_offset"`` (default) or ``"onset"`` (difference from the onset only).
        blur_sigma: Gaussian blur in pixels before differencing (0: none).
        window: length of the temporal moving average, frames (1: none).
    """
    scores = motion_scores(frames, onset_index, offset_index, reference=reference,
                           blur_sigma=blur_sigma, window=window)
    return int(np.argmax(scores))
