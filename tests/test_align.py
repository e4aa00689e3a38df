"""Face alignment on a real face photo (scikit-image's astronaut) and its geometry."""
import importlib.util
import pickle

import cv2
import numpy as np
import pytest
from skimage import data

from fr_mer.pipeline import align
from fr_mer.pipeline.align import (FACE_FROM_APEX, NO_FACE_WHOLE_FRAME, RELEASE_CROP, AlignParams, FaceAligner,
                                   apply_matrix,
                                   default_predictor_path, eye_centres, rescale_matrix, rescale_points,
                                   whole_frame_matrix)
from fr_mer.pipeline.flow import tvl1_flow


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner()


@pytest.fixture(scope="module")
def astronaut():
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)


def moved(image, angle, scale, shift):
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += shift
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def test_default_predictor_path_is_the_68_point_model():
    path = default_predictor_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.is_file()


def test_missing_model_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install face-recognition-models.*--landmarks-model"):
        default_predictor_path()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FaceAligner(predictor_path=tmp_path / "nope.dat")


def test_template_eyes_are_level_at_the_configured_distance():
    a = FaceAligner(AlignParams(face_size=100, eye_distance=0.4, eye_height=0.3))
    eyes = a.template_eyes()
    assert eyes[0, 1] == eyes[1, 1] == pytest.approx(29.5)  # 0.3 of [-0.5, 99.5]
    assert eyes[1, 0] - eyes[0, 0] == pytest.approx(40)
    assert (eyes[0, 0] + eyes[1, 0]) / 2 == pytest.approx(49.5)  # centred on the pixel grid
    np.testing.assert_allclose(a.template_eyes(200), 2 * eyes + 0.5, atol=1e-5)


def test_transform_is_a_similarity_taking_the_eyes_to_the_template():
    rng = np.random.default_rng(0)
    lm = rng.uniform(100, 300, size=(68, 2)).astype(np.float32)
    a = FaceAligner()
    for size in (None, 170):
        m = a.transform(lm, size)
        assert m.shape == (2, 3)
        assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])
        np.testing.assert_allclose(apply_matrix(m, eye_centres(lm)), a.template_eyes(size), atol=1e-3)


def test_rescaled_matrix_equals_the_transform_at_the_other_size():
    rng = np.random.default_rng(1)
    lm = rng.uniform(100, 300, size=(68, 2)).astype(np.float32)
    a = FaceAligner()
    m128, m256 = a.transform(lm, 128), a.transform(lm, 256)
    np.testing.assert_allclose(rescale_matrix(m128, 128, 256), m256, atol=1e-4)
    np.testing.assert_allclose(rescale_points(apply_matrix(m128, lm), 128, 256), apply_matrix(m256, lm), atol=1e-3)


def test_whole_frame_matrix_maps_frame_edges_to_crop_edges():
    m = whole_frame_matrix((170, 140), 128)
    corners = np.array([[-0.5, -0.5], [139.5, 169.5]])
    np.testing.assert_allclose(apply_matrix(m, corners), [[-0.5, -0.5], [127.5, 127.5]], atol=1e-4)


@pytest.mark.parametrize("size", [128, 170])
def test_astronaut_eyes_land_on_the_template(aligner, astronaut, size):
    pair = aligner.align_pair(astronaut, astronaut, size=size)
    assert pair.flags == [] and pair.onset.shape == (size, size) and pair.onset.dtype == np.uint8
    # the landmarks carried into the crop put the eyes on the template exactly ...
    np.testing.assert_allclose(eye_centres(pair.landmarks), aligner.template_eyes(size), atol=1e-3)
    # ... and landmarks detected again on the aligned crop agree within 2 px
    again = aligner.landmarks(pair.onset, pre_cropped=True)
    assert again is not None
    assert np.abs(eye_centres(again) - aligner.template_eyes(size)).max() < 2.0
    # the whole face (all 68 points, chin included) is inside the crop
    assert pair.landmarks.min() > 0 and pair.landmarks.max() < size - 1


def test_moved_astronaut_aligns_to_the_same_template(aligner, astronaut):
    reference = aligner.align_pair(astronaut, astronaut)
    copy = moved(astronaut, angle=12, scale=1.3, shift=(20, -15))
    pair = aligner.align_pair(copy, copy)
    assert pair.flags == []
    again = aligner.landmarks(pair.onset, pre_cropped=True)
    assert np.abs(eye_centres(again) - aligner.template_eyes()).max() < 2.0
    # the two crops show the same face in the same place
    diff = np.abs(pair.onset.astype(np.float32) - reference.onset.astype(np.float32))
    assert diff.mean() < 5.0
    # the matrix undoes the move: (rotation 12 deg, scale 1.3) composed with it is the reference's
    lin = pair.matrix[:, :2] @ cv2.getRotationMatrix2D((0, 0), 12, 1.3)[:, :2]
    np.testing.assert_allclose(lin, reference.matrix[:, :2], atol=0.03)


def test_one_matrix_for_onset_and_apex(aligner, astronaut):
    apex = moved(astronaut, angle=0, scale=1.0, shift=(1.0, 0.0))
    pair = aligner.align_pair(astronaut, apex)
    np.testing.assert_array_equal(pair.onset, aligner.warp(astronaut, pair.matrix, 128))
    np.testing.assert_array_equal(pair.apex, aligner.warp(apex, pair.matrix, 128))
    same = aligner.align_pair(astronaut, astronaut.copy())
    np.testing.assert_array_equal(same.onset, same.apex)
    assert np.abs(tvl1_flow(same.onset, same.apex)).max() < 1e-4


def test_fallback_to_the_apex_face(aligner, astronaut):
    blank = np.full_like(astronaut, 128)
    pair = aligner.align_pair(blank, astronaut)
    assert pair.flags == [FACE_FROM_APEX]
    np.testing.assert_allclose(pair.matrix, aligner.transform(aligner.landmarks(astronaut)), atol=1e-5)
    assert np.isfinite(pair.landmarks).all()


@pytest.mark.parametrize("crop, pre_cropped, flags", [
    ("template", True, [NO_FACE_WHOLE_FRAME]),
    ("auto", False, [NO_FACE_WHOLE_FRAME]),
    ("auto", True, [RELEASE_CROP, NO_FACE_WHOLE_FRAME]),
])
def test_no_face_anywhere_uses_the_whole_frame(crop, pre_cropped, flags):
    aligner = FaceAligner(AlignParams(crop=crop))
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (170, 140), dtype=np.uint8), (0, 0), 3)
    pair = aligner.align_pair(frame, frame, size=64, pre_cropped=pre_cropped)
    assert pair.flags == flags
    assert np.isnan(pair.landmarks).all() and pair.landmarks.shape == (68, 2)
    np.testing.assert_allclose(pair.matrix, whole_frame_matrix(frame.shape, 64))
    resized = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(pair.onset.astype(np.float32) - resized).mean() < 1.5


@pytest.mark.parametrize("crop, pre_cropped", [("auto", True), ("frame", False), ("frame", True)])
def test_a_cropped_release_keeps_its_own_crop(astronaut, crop, pre_cropped):
    # the release's face crop, taller than wide like CASME II's reg_img frames: scaled edge to
    # edge onto the square (no replicated border), its landmarks found and mapped into it
    face = astronaut[40:250, 150:320]
    aligner = FaceAligner(AlignParams(crop=crop))
    pair = aligner.align_pair(face, face, size=96, pre_cropped=pre_cropped)
    assert pair.flags == [RELEASE_CROP]
    np.testing.assert_allclose(pair.matrix, whole_frame_matrix(face.shape, 96))
    found = aligner.landmarks(face, pre_cropped=pre_cropped)
    np.testing.assert_allclose(pair.landmarks, apply_matrix(pair.matrix, found), atol=1e-4)
    resized = cv2.resize(face, (96, 96), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(pair.onset.astype(np.float32) - resized).mean() < 3  # anisotropic: area prefilter, then bilinear


def test_raw_frames_keep_the_eye_template_under_auto(aligner, astronaut):
    pair = FaceAligner(AlignParams(crop="auto")).align_pair(astronaut, astronaut, size=96)
    assert pair.flags == []
    np.testing.assert_allclose(pair.matrix, aligner.transform(aligner.landmarks(astronaut), 96), atol=1e-5)


def test_pre_cropped_frames_get_a_padded_detection(aligner, astronaut):
    # cut inside the face box, as cropped releases are: the HOG window finds no
    # face even upsampled, and does once the border is replicated around it
    tight = astronaut[89:164, 185:260]
    assert aligner.landmarks(tight) is None
    found = aligner.landmarks(tight, pre_cropped=True)
    assert found is not None
    reference = aligner.landmarks(astronaut) - [185, 89]
    assert np.abs(eye_centres(found) - eye_centres(reference)).max() < 2.0


def test_non_contiguous_views_are_read_correctly(aligner, astronaut):
    # dlib reads a strided numpy view as if it were contiguous (wrong pixels)
    view = astronaut[73:180, 174:271]
    assert not view.flags.c_contiguous
    found = aligner.landmarks(view)
    assert found is not None
    np.testing.assert_allclose(found, aligner.landmarks(view.copy()))


def test_large_frames_are_detected_at_reduced_size_and_fitted_at_full(aligner, astronaut):
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    lm = aligner.landmarks(big)
    ref = aligner.landmarks(astronaut)
    # the same face, at 3x the coordinates (landmark jitter of a few pixels at 3x)
    assert np.abs(eye_centres(lm) / 3 - eye_centres(ref)).max() < 2.0


def test_shrinking_warp_is_antialiased(aligner):
    # a one-pixel checkerboard shrunk 4x must average to grey, not alias to black/white
    board = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = aligner.warp(board, whole_frame_matrix(board.shape, 64), 64)
    assert np.abs(out.astype(np.float32) - 127.5).max() < 2
    rng = np.random.default_rng(1)
    smooth = cv2.GaussianBlur(rng.random((256, 256)).astype(np.float32) * 255, (0, 0), 2)
    np.testing.assert_allclose(aligner.warp(smooth, whole_frame_matrix(smooth.shape, 64), 64),
                               cv2.resize(smooth, (64, 64), interpolation=cv2.INTER_AREA), atol=0.5)


def test_aligner_pickles_without_its_models(aligner, astronaut):
    aligner.landmarks(astronaut)  # models loaded
    clone = pickle.loads(pickle.dumps(aligner))
    assert clone._predictor is None and clone.params == aligner.params
    np.testing.assert_array_equal(clone.landmarks(astronaut), aligner.landmarks(astronaut))


def test_bad_input_is_rejected(aligner, astronaut):
    with pytest.raises(ValueError, match="grayscale"):
        aligner.align_pair(data.astronaut(), data.astronaut())
    with pytest.raises(ValueError, match="differ in size"):
        aligner.align_pair(astronaut, astronaut[:100])
    with pytest.raises(ValueError, match="eye_distance"):
        AlignParams(eye_distance=1.5)
    with pytest.raises(ValueError, match="unknown crop 'tight': expected one of template, frame, auto"):
        AlignParams(crop="tight")
    assert align.LEFT_EYE == slice(36, 42)
