"""The stored crops, landmarks and clip frames cover the flow crop's face region exactly.

A small Gaussian dot is drawn on the apex frame at a known frame point (a detected
landmark); onset and apex are warped by one matrix, so ``apex - onset`` of any
crop is the dot alone, and its centroid is where that crop puts the frame point.
Positions in crops of different sizes are compared in the pixel-centre convention
of ``pipeline.align``: x at size a is ``(x + 0.5) * b / a - 0.5`` at size b.
"""
from __future__ import annotations

import numpy as np
import pytest

from fr_mer.pipeline.align import FaceAligner, rescale_points
from fr_mer.pipeline.preprocess import ClipOptions, PreprocessParams, process_pair
from tests.test_preprocess import astronaut_frame

NOSE_TIP = 30


def _with_dot(frame: np.ndarray, centre: np.ndarray, sigma: float = 2.5, amplitude: float = 90.0) -> np.ndarray:
    ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]]
    dot = amplitude * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    return np.clip(np.rint(frame + dot), 0, 255).astype(np.uint8)


def _centroid(difference: np.ndarray, radius: int) -> np.ndarray:
    """(x, y) centroid of the dot in ``difference`` (a window around its peak)."""
    d = difference.astype(np.float64)
    y0, x0 = np.unravel_index(np.argmax(d), d.shape)
    window = d[y0 - radius: y0 + radius + 1, x0 - radius: x0 + radius + 1]
    window = np.clip(window - np.median(d), 0, None)
    ys, xs = np.mgrid[-radius: radius + 1, -radius: radius + 1]
    return np.array([x0 + (xs * window).sum() / window.sum(), y0 + (ys * window).sum() / window.sum()])


def _to_size(point: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    return (np.asarray(point, np.float64) + 0.5) * to_size / from_size - 0.5


@pytest.mark.parametrize("flow_size", [64, 256])
def test_stored_crops_and_landmarks_sit_on_the_flow_crop(flow_size):
    params = PreprocessParams(flow_size=flow_size, head_motion="none", clip=ClipOptions(length=2, size=48))
    onset = astronaut_frame(gain=0.6)
    aligner = FaceAligner(params.align)
    frame_nose = aligner.landmarks(onset)[NOSE_TIP]
    apex = _with_dot(onset, frame_nose)
    sample = process_pair(onset, apex, params, clip_frames=[onset, apex])
    arrays = sample.arrays
    face = params.face_size

    # the flow's crop: the pair aligned at flow_size, as TV-L1 sees it
    flow_pair = aligner.align_pair(onset, apex, size=flow_size)
    scale = flow_size / face  # crop px per face px: the dot is ~2.5 frame px wide at every size
    in_flow = _centroid(flow_pair.apex.astype(int) - flow_pair.onset.astype(int), max(3, round(8 * scale)))
    in_face = _centroid(arrays["apex_face"].astype(int) - arrays["onset_face"].astype(int), 8)
    clip_frames = arrays["clip_frames"].astype(int)
    in_clip = _centroid(clip_frames[-1] - clip_frames[0], 4)

    # each in its own pixels; before the fix a crop of size s was off by 0.5 (s / flow_size - 1) px
    np.testing.assert_allclose(in_face, _to_size(in_flow, flow_size, face), atol=0.05)
    np.testing.assert_allclose(in_clip, _to_size(in_flow, flow_size, 48), atol=0.05)
    # the stored landmarks: the flow crop's, at the face size, and on the dot
    np.testing.assert_allclose(arrays["landmarks"], rescale_points(flow_pair.landmarks, flow_size, face), atol=1e-4)
    np.testing.assert_allclose(arrays["landmarks"][NOSE_TIP], in_face, atol=0.05)
    # the stored matrix maps the frame point to the same place
    matrix = np.asarray(arrays["align_matrix"], np.float64)
    np.testing.assert_allclose(matrix[:, :2] @ frame_nose + matrix[:, 2], in_face, atol=0.05)
