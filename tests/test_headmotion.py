"""Head-motion compensation: exact fits on analytic fields, and the default on a synthetic face pair."""
import cv2
import numpy as np
import pytest
from skimage import data

from fr_mer.pipeline.align import FaceAligner
from fr_mer.pipeline.flow import tvl1_flow
from fr_mer.pipeline.headmotion import (DEFAULT_METHOD, METHODS, RIGID_LANDMARKS, compensate, compensate_flow,
                                        fit_similarity, fit_similarity_field, motion_field, nose_box, rigid_mask)

S = 128


def similarity(angle_deg, scale, tx, ty):
    c, s = scale * np.cos(np.radians(angle_deg)), scale * np.sin(np.radians(angle_deg))
    return np.array([[c, -s, tx], [s, c, ty]])


def face_landmarks():
    """A plausible 68-point layout in a 128 crop (random points, nose and eyes where a face has them)."""
    rng = np.random.default_rng(0)
    lm = rng.uniform(20, 108, size=(68, 2))
    lm[27:36] = rng.uniform([55, 45], [73, 80], size=(9, 2))   # nose
    lm[[0, 1, 2]] = [[15, 40], [16, 55], [18, 70]]            # contour, image left
    lm[[16, 15, 14]] = [[113, 40], [112, 55], [110, 70]]
    lm[36:42], lm[42:48] = [38, 41], [90, 41]                 # eyes
    return lm.astype(np.float32)


def test_fit_similarity_recovers_an_exact_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 128, size=(14, 2))
    m = similarity(3.0, 1.04, -1.5, 0.7)
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(fit_similarity(src, dst), m, atol=1e-5)


def test_rigid_flow_removes_an_exact_head_motion_and_keeps_the_expression():
    lm = face_landmarks()
    head = similarity(1.0, 1.02, 1.5, -0.8) - np.eye(2, 3)  # displacement field of a similarity
    flow = motion_field(head, (S, S))
    # expression: 1 px upward bump at the mouth, away from the rigid regions
    y, x = np.mgrid[0:S, 0:S]
    bump = np.exp(-((x - 64) ** 2 + (y - 112) ** 2) / (2 * 6.0**2))
    flow[..., 1] -= bump
    assert not (rigid_mask(lm, (S, S)) & (bump > 1e-3)).any()
    out, info = compensate_flow(flow, lm, "rigid_flow")
    assert info["applied"]
    np.testing.assert_allclose(info["field"], head, atol=1e-4)
    np.testing.assert_allclose(out[..., 1], -bump, atol=1e-3)
    np.testing.assert_allclose(out[..., 0], 0, atol=1e-3)


def test_nose_flow_subtracts_the_nose_box_mean():
    lm = face_landmarks()
    flow = np.zeros((S, S, 2), np.float32)
    flow[..., 0], flow[..., 1] = 0.7, -0.4
    top, bottom, left, right = nose_box(lm, flow.shape)
    flow[bottom + 5:, :, 1] += 1.0  # motion below the nose does not count
    out, info = compensate_flow(flow, lm, "nose_flow")
    np.testing.assert_allclose(info["field"][:, 2], [0.7, -0.4], atol=1e-5)
    np.testing.assert_allclose(out[top:bottom, left:right], 0, atol=1e-5)
    np.testing.assert_allclose(out[bottom + 5:, :, 1], 1.0, atol=1e-5)


def test_methods_that_do_not_act_are_no_ops_and_missing_landmarks_are_reported():
    lm = face_landmarks()
    flow = np.random.default_rng(2).normal(size=(S, S, 2)).astype(np.float32)
    image = np.zeros((S, S), np.uint8)
    for method in ("none", "rigid"):
        out, info = compensate_flow(flow, lm, method)
        assert out is flow or np.array_equal(out, flow)
        assert not info["applied"]
    for method in ("none", "nose_flow", "rigid_flow"):
        apex, info = compensate(image, image, lm, method)
        assert apex is image and not info["applied"]
    nan = np.full((68, 2), np.nan, np.float32)
    out, info = compensate_flow(flow, nan, "rigid_flow")
    assert not info["applied"] and "landmarks" in info["reason"]
    np.testing.assert_array_equal(out, flow)
    with pytest.raises(ValueError, match="head-motion method"):
        compensate_flow(flow, lm, "optical")


def test_rigid_registers_the_apex_on_given_landmarks():
    rng = np.random.default_rng(3)
    onset = cv2.GaussianBlur(rng.random((S, S)).astype(np.float32) * 255, (0, 0), 2)
    lm = face_landmarks()
    shift = np.float32([[1, 0, 1.5], [0, 1, -1.0]])
    apex = cv2.warpAffine(onset, shift, (S, S), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    registered, info = compensate(onset, apex, lm, "rigid", apex_landmarks=lm + [1.5, -1.0])
    assert info["applied"]
    np.testing.assert_allclose(info["matrix"], [[1, 0, -1.5], [0, 1, 1.0]], atol=1e-5)
    inner = slice(8, -8)
    assert np.abs(registered[inner, inner] - onset[inner, inner]).mean() < 0.5


def test_rigid_landmarks_exclude_mouth_and_brows():
    assert not set(RIGID_LANDMARKS) & (set(range(17, 27)) | set(range(48, 68)))


@pytest.fixture(scope="module")
def face_pair():
    """Astronaut onset, apex = onset moved 1.5 px (head) + a ~1 px smile at the mouth corners (expression).

    Returns the aligned pair and the true expression flow in the onset crop.
    """
    aligner = FaceAligner()
    frame = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    lm = aligner.landmarks(frame.astype(np.uint8))
    centres = lm[[48, 54]].astype(np.float64)
    amps = np.array([[-0.7, -0.7], [0.7, -0.7]])
    sigma = 9.0
    head = np.array([1.2, 0.9])  # 1.5 px

    def expression(q):
        e = np.zeros_like(q)
        for c, a in zip(centres, amps):
            e += np.exp(-((q - c) ** 2).sum(axis=-1) / (2 * sigma**2))[..., None] * a
        return e

    h, w = frame.shape
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float64)
    q = grid - head
    for _ in range(8):  # invert q -> q + head + e(q) by fixed-point iteration
        q = grid - head - expression(q)
    apex = cv2.remap(frame, q[..., 0].astype(np.float32), q[..., 1].astype(np.float32), cv2.INTER_CUBIC,
                     borderMode=cv2.BORDER_REFLECT)
    pair = aligner.align_pair(frame.astype(np.uint8), np.clip(np.rint(apex), 0, 255).astype(np.uint8))
    m = pair.matrix.astype(np.float64)
    inverse = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    crop = np.stack(np.meshgrid(np.arange(S), np.arange(S)), axis=-1).astype(np.float64)
    truth = expression(crop @ inverse[:, :2].T + inverse[:, 2]) @ m[:, :2].T
    return aligner, pair, truth


def recovered_error(face_pair, method):
    aligner, pair, truth = face_pair
    apex, _ = compensate(pair.onset, pair.apex, pair.landmarks, method, aligner=aligner)
    flow, _ = compensate_flow(tvl1_flow(pair.onset, apex), pair.landmarks, method)
    inner = slice(S // 10, -S // 10)
    return float(np.linalg.norm(flow - truth, axis=-1)[inner, inner].mean())


def test_default_method_recovers_the_expression_better_than_none(face_pair):
    assert DEFAULT_METHOD in METHODS
    none = recovered_error(face_pair, "none")
    default = recovered_error(face_pair, DEFAULT_METHOD)
    assert none > 1.0  # the head's 1.5 px dominates the raw flow
    assert default < 0.3 and default < 0.25 * none


def test_similarity_field_fit_recovers_a_known_motion_and_ignores_outside_the_mask():
    # A 1 degree rotation with 1% scale about (40, 50) plus a (0.7, -0.3) px shift: closed form below.
    angle, scale = np.deg2rad(1.0), 1.01
    a, b = scale * np.cos(angle) - 1, scale * np.sin(angle)
    lin = np.array([[a, -b], [b, a]])
    model = np.hstack([lin, (np.array([0.7, -0.3]) - lin @ [40, 50])[:, None]])
    flow = motion_field(model, (96, 96))
    mask = np.zeros((96, 96), bool)
    mask[20:40, 30:60] = True
    mask[70:80, 10:20] = True
    flow[mask == 0] += 5.0  # expression motion where the fit must not look
    fitted = fit_similarity_field(flow, mask)
    np.testing.assert_allclose(fitted, model, atol=1e-5)
    with pytest.raises(ValueError, match="fewer than 3"):
        fit_similarity_field(flow, np.zeros((96, 96), bool))
