"""Apex spotting on sequences with a known peak."""
import cv2
import numpy as np
import pytest

from fr_mer.pipeline.spotting import face_region, motion_scores, spot_apex, spotting_errors

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


# -- the face region ---------------------------------------------------------------------

def flicker_outside(frames, box, seed=0, amplitude=2.5):
    """``frames`` with a strong random motion outside ``box`` (x0, y0, x1, y1) peaking at the last frame,
    as a registered crop's replicated borders and background give: the face inside is untouched."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box
    y, x = np.mgrid[0:N, 0:N].astype(np.float32)
    out = []
    for t, frame in enumerate(frames):
        shift = amplitude * t / (len(frames) - 1) * rng.normal(size=(N, N)).astype(np.float32)
        moved = cv2.remap(frame, x + cv2.GaussianBlur(shift, (0, 0), 2), y, cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)
        mixed = moved.copy()
        mixed[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
        out.append(mixed)
    return out


def test_the_face_region_keeps_motion_outside_the_face_from_the_score():
    box = (24, 28, 58, 62)  # holds the moving patch around (40, 45)
    frames = flicker_outside(sequence(peak=PEAK), box)
    assert abs(spot_apex(frames, region=box) - PEAK) <= 1
    assert spot_apex(frames) > PEAK + 8  # the whole frame's motion is the flicker's


def test_face_region_is_the_landmarks_box_with_the_forehead():
    landmarks = np.array([[10.0, 20.0], [50.0, 60.0]] + [[30.0, 40.0]] * 66)
    assert face_region(landmarks, (64, 64)) == (10, 14, 51, 61)  # 15 % of 40 px added above
    assert face_region(landmarks, (50, 40)) == (10, 14, 40, 50)  # inside the frame
    assert face_region(np.full((68, 2), np.nan), (64, 64)) is None
    with pytest.raises(ValueError, match="region"):
        spot_apex(sequence(), region=(10, 10, 5, 20))


# -- the error against annotated apexes ----------------------------------------------------

def test_spotting_errors_of_hand_made_clips_in_closed_form():
    """Four clips with known peaks, annotated 0, 3, 7 and 12 frames away (either side): the spotter
    finds the peaks, so the errors are those offsets: median (3 + 7) / 2 = 5, mean 5.5, within 5
    frames 2 of 4, within 10 frames 3 of 4."""
    peaks = (8, 11, 15, 20)
    spotted = [spot_apex(sequence(peak=p)) for p in peaks]
    assert spotted == list(peaks)
    annotated = [8, 11 - 3, 15 + 7, 20 - 12]
    errors = spotting_errors(spotted, annotated)
    assert (errors.n, errors.median, errors.mean) == (4, 5.0, 5.5)
    assert errors.within == {5: 0.5, 10: 0.75}
    assert errors.as_dict()["within"] == {"5": 0.5, "10": 0.75}
    assert spotting_errors([3], [3], tolerances=(0,)).within == {0: 1.0}
    with pytest.raises(ValueError, match="as many"):
        spotting_errors([1, 2], [1])
    with pytest.raises(ValueError, match="as many"):
        spotting_errors([], [])
