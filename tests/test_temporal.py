"""pipeline.temporal against closed-form answers."""
from __future__ import annotations

import numpy as np
import pytest

from fr_mer.pipeline.temporal import dssi, dssi_indices, dynamic_image, rank_pool_weights, resample_clip


def ramp(length: int, slope: np.ndarray, offset: float = 7.0) -> np.ndarray:
    """Frames x_t = offset + slope * (t - 1), t = 1..length; slope per pixel."""
    t = np.arange(length, dtype=np.float64)[:, None, None]
    return offset + slope[None] * t


def test_rank_pool_weights_closed_form():
    np.testing.assert_array_equal(rank_pool_weights(4), [-3.0, -1.0, 1.0, 3.0])
    np.testing.assert_array_equal(rank_pool_weights(1), [0.0])
    for length in (2, 5, 16):
        w = rank_pool_weights(length)
        assert w.dtype == np.float32
        assert w.sum() == 0
        np.testing.assert_array_equal(w, -w[::-1])  # antisymmetric in time
        assert np.sum(w.astype(np.float64) ** 2) == pytest.approx(length * (length**2 - 1) / 3)


def test_rank_pool_weights_rejects_bad_length():
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="length"):
            rank_pool_weights(bad)


def test_dynamic_image_of_a_linear_ramp():
    slope = np.array([[0.0, 1.0], [-2.0, 0.5]])
    frames = ramp(5, slope)
    # Raw sum: sum_t (2t - T - 1)(offset + s (t - 1)) = s (T^3 - T) / 6 = 20 s for T = 5.
    np.testing.assert_allclose(dynamic_image(frames, normalise=False), 20.0 * slope, atol=1e-5)
    # Normalised: the change along the ramp from first to last frame, s (T - 1), for any T.
    for length in (2, 5, 9):
        image = dynamic_image(list(ramp(length, slope)))
        assert image.dtype == np.float32 and image.shape == (2, 2)
        np.testing.assert_allclose(image, slope * (length - 1), atol=1e-5)


def test_dynamic_image_matches_a_direct_sum_and_ignores_brightness():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 4, 3)).astype(np.uint8)
    direct = sum((2 * t - 7 - 1) * frames[t - 1].astype(np.float64) for t in range(1, 8))
    np.testing.assert_allclose(dynamic_image(frames, normalise=False), direct, rtol=1e-6)
    shifted = frames.astype(np.float64) + 30.0
    np.testing.assert_allclose(dynamic_image(shifted), dynamic_image(frames), atol=1e-4)
    np.testing.assert_array_equal(dynamic_image(frames[:1]), np.zeros((4, 3), np.float32))


def test_resample_clip_keeps_endpoints_and_interpolates_linearly():
    frames = [np.full((2, 3), v, dtype=np.uint8) for v in (0, 10, 20)]
    out = resample_clip(frames, 5)
    assert out.dtype == np.uint8 and out.shape == (5, 2, 3)
    np.testing.assert_array_equal(out[:, 0, 0], [0, 5, 10, 15, 20])
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, size=(11, 4, 4)).astype(np.uint8)
    for length in (2, 4, 11, 30):
        out = resample_clip(clip, length)
        np.testing.assert_array_equal(out[0], clip[0])
        np.testing.assert_array_equal(out[-1], clip[-1])
    np.testing.assert_array_equal(resample_clip(clip, 11), clip)
    np.testing.assert_array_equal(resample_clip(clip, 1), clip[:1])
    floats = rng.random((3, 2, 2)).astype(np.float32)
    mid = resample_clip(floats, 5)[1]
    assert mid.dtype == np.float32
    np.testing.assert_allclose(mid, 0.5 * floats[0] + 0.5 * floats[1], rtol=1e-6)


def test_resample_clip_validates_input():
    with pytest.raises(ValueError, match="different shapes"):
        resample_clip([np.zeros((2, 2)), np.zeros((3, 2))], 4)
    with pytest.raises(ValueError, match="empty"):
        resample_clip([], 4)
    with pytest.raises(ValueError, match="length"):
        resample_clip([np.zeros((2, 2))], 0)


def test_dssi_shapes_and_ramp_values():
    slope = np.array([[1.0, -3.0], [0.0, 2.0]])
    # 13 frames, K = 3: segments 0-4, 4-8, 8-12 (5 frames each, all kept).
    images = dssi(ramp(13, slope), 3)
    assert images.shape == (4, 2, 2) and images.dtype == np.float32
    for k in range(3):
        np.testing.assert_allclose(images[k], 4.0 * slope, atol=1e-4)
    np.testing.assert_allclose(images[3], 12.0 * slope, atol=1e-4)
    # 25 frames: each segment sparsely sampled at 0, 2, 4, 6, 8 (+ offset); same answers.
    images = dssi(ramp(25, slope), 3, frames_per_segment=5)
    for k in range(3):
        np.testing.assert_allclose(images[k], 8.0 * slope, atol=1e-4)
    np.testing.assert_allclose(images[3], 24.0 * slope, atol=1e-4)


def test_dssi_indices_cover_the_clip_sparsely():
    parts, everything = dssi_indices(61, 4, 5)
    assert len(parts) == 4
    assert parts[0][0] == 0 and parts[-1][-1] == 60
    for a, b in zip(parts[:-1], parts[1:]):
        assert a[-1] == b[0]  # neighbouring segments share their boundary frame
    assert all(len(p) == 5 for p in parts)
    np.testing.assert_array_equal(everything, np.unique(np.concatenate(parts)))
    dense, _ = dssi_indices(61, 4, None)
    assert sum(len(p) for p in dense) == 61 + 3


def test_dssi_short_clip_is_resampled_first():
    frames = [np.zeros((3, 3), np.uint8), np.full((3, 3), 30, np.uint8)]
    images = dssi(frames, 3)
    assert images.shape == (4, 3, 3)
    np.testing.assert_allclose(images[:3], 10.0, atol=1e-4)  # 0, 10, 20, 30 after resampling
    np.testing.assert_allclose(images[3], 30.0, atol=1e-4)
    with pytest.raises(ValueError, match="segments"):
        dssi(frames, 0)
    with pytest.raises(ValueError, match="frames_per_segment"):
        dssi(frames, 2, frames_per_segment=1)
