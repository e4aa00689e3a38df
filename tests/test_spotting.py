"""Apex spotting on sequences with a known peak."""
import cv2
import numpy as np
import pytest

from fr_mer.pipeline.spotting import motion_scores, spot_apex

T, PEAK, N = 30, 11, 64


def sequence(peak=PEAK, drift=0.0, noise=0.0, seed=0):
    """Textured frames; a local patch moves 0 -> 1.5 px -> 0 (triangle, top at ``peak``).

    ``drift``: a global shift growing linearly to ``drift`` px at the last frame.
    """
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((N, N)).astype(np.float32) * 255, (0, 0), 1.5)
    y, x = np.mgrid[0:N, 0:N].astype(np.float32)
    bump = np.exp(-((x - 40) ** 2 + (y - 45) ** 2) / (2 * 5.0**2))
    frames = []
    for t in range(T):
        a = 1.5 * max(0.0, 1 - abs(t - peak) / 8)
        d = drift * t / (T - 1)
        mx, my = x - d, y - d - a * bump
        f = cv2.remap(base, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8))
    return frames


@pytest.mark.parametrize("reference", ["onset_offset", "onset"])
def test_known_peak_is_found(reference):
    assert spot_apex(sequence(), reference=reference) == PEAK


@pytest.mark.parametrize("seed", [1, 2])
def test_noise_moves_the_peak_by_at_most_a_frame(seed):
    assert abs(spot_apex(sequence(noise=3.0, seed=seed)) - PEAK) <= 1


@pytest.mark.parametrize("peak", [6, 20])
def test_head_drift_is_not_taken_for_the_apex(peak):
    frames = sequence(peak=peak, drift=2.0)
    assert abs(spot_apex(frames) - peak) <= 1
    if peak == 6:
        # the motion from the onset alone picks the drifted end instead
        assert spot_apex(frames, reference="onset") > peak + 10


def test_large_frames_are_shrunk_first():
    frames = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in sequence()]
    assert spot_apex(frames) == PEAK


def test_only_frames_between_onset_and_offset_count():
    frames = sequence(peak=20)
    assert spot_apex(frames, onset_index=3, offset_index=16) in range(3, 17)
    scores = motion_scores(frames, onset_index=3, offset_index=16)
    assert np.isneginf(scores[:3]).all() and np.isneginf(scores[17:]).all()
    assert spot_apex(frames, onset_index=5) == 20


def test_bad_arguments():
    frames = sequence()
    with pytest.raises(ValueError, match="onset_index"):
        spot_apex(frames, onset_index=40)
    with pytest.raises(ValueError, match="frame 2"):
        spot_apex(frames[:2] + [np.zeros((5, 5))])
    with pytest.raises(ValueError, match="at least one frame"):
        spot_apex([])
    assert spot_apex(frames[:1]) == 0
