"""The torch TV-L1 against OpenCV's DualTVL1OpticalFlow: its steps one by one, then whole flows.

At fr-mer's default parameters (5 scales, 5 warps) TV-L1 is ill-conditioned near
the image border and in flat regions: OpenCV's own flow moves by about 0.01 px on
average when its input changes by 0.001 gray levels, so float32 rounding alone
separates two correct implementations by as much. There the tests hold the
issue's bound (mean end-point error, EPE, against OpenCV's flow under 0.05 px)
and the same strain. With 3 scales and 3 warps the problem is well conditioned
and the port matches OpenCV to rounding (mean EPE < 1e-3 px, measured <= 1.2e-4)
at every parameter setting; dropping the median filter, the stopping rule, the
warp's zero border or OpenCV's pyramid scaling each gives >= 0.005 px there.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from fr_mer.errors import ParameterError
from fr_mer.pipeline.flow import TVL1Params, optical_strain
from fr_mer.pipeline.flow import tvl1_flow as opencv_flow
from fr_mer.pipeline.tvl1_torch import (
    centered_gradient,
    divergence,
    forward_gradient,
    median_filter,
    pyramid_sizes,
    resize_linear,
    tvl1_flow,
    warp_bicubic,
)

APEX_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "megc2019" / "apex_faces"

MEAN_EPE_BOUND = 0.05


@pytest.fixture(autouse=True)
def one_thread_each():
    """OpenCV and torch on one thread (CI has 2 cores shared with other jobs)."""
    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    yield
    cv2.setNumThreads(cv_threads)
    torch.set_num_threads(torch_threads)


def texture(seed, n=96, sigma=2.0):
    """Smooth random texture on the 0..255 scale, float32."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((n, n)).astype(np.float32), (0, 0), sigma)
    return (t - t.min()) / (t.max() - t.min()) * 255


def moved(image, matrix):
    """image under the 2x3 affine ``matrix`` (bicubic, reflected border), float32."""
    return cv2.warpAffine(image, np.float32(matrix), image.shape[::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def astronaut_face(n=128):
    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)[20:240, 140:360]
    return cv2.resize(gray, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32)


def with_expression(face):
    """face with a smooth local warp around the mouth (up to 1 px) and a (-0.3, 0.2) px head shift."""
    n = face.shape[0]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    bump = np.exp(-(((xx - 0.5 * n) / (0.15 * n)) ** 2 + ((yy - 0.75 * n) / (0.08 * n)) ** 2))
    map_x = (xx - 0.3 - bump).astype(np.float32)
    map_y = (yy + 0.2 - 0.5 * bump).astype(np.float32)
    return cv2.remap(face, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def torch_flows(pairs, params=TVL1Params()):
    """(N, H, W, 2) numpy flows of the torch solver for N pairs run as one batch."""
    first = torch.from_numpy(np.stack([a for a, _ in pairs]))
    second = torch.from_numpy(np.stack([b for _, b in pairs]))
    return tvl1_flow(first, second, params).permute(0, 2, 3, 1).numpy()


def epe(flow_a, flow_b):
    """(H, W) end-point distance between two (H, W, 2) flows."""
    return np.hypot(*(flow_a - flow_b).transpose(2, 0, 1))


def mean_strain_difference(flow_a, flow_b):
    return float(np.mean(np.abs(optical_strain(flow_a[..., 0], flow_a[..., 1])
                                - optical_strain(flow_b[..., 0], flow_b[..., 1]))))


# ---- the steps, each against OpenCV or a closed form ---------------------------------------

def test_pyramid_sizes_are_opencvs():
    image = np.zeros((256, 200), np.float32)
    expected = [image.shape]
    for _ in range(4):
        image = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        expected.append(image.shape)
    assert pyramid_sizes(256, 200, 5, 0.8) == expected == [(256, 200), (205, 160), (164, 128), (131, 102), (105, 82)]
    # OpenCV drops the first level with a side under 16 px
    assert pyramid_sizes(40, 25, 5, 0.8) == [(40, 25), (32, 20), (26, 16)]


def test_linear_resize_matches_opencv_both_ways():
    image = (np.random.default_rng(0).random((50, 61)) * 255).astype(np.float32)
    down = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours = resize_linear(torch.from_numpy(image)[None], down.shape, (1 / 0.8, 1 / 0.8))[0].numpy()
    np.testing.assert_allclose(ours, down, atol=1e-3)
    up = cv2.resize(down, (61, 50), interpolation=cv2.INTER_LINEAR)
    ours_up = resize_linear(torch.from_numpy(down)[None], (50, 61), (down.shape[0] / 50, down.shape[1] / 61))[0]
    np.testing.assert_allclose(ours_up.numpy(), up, atol=1e-3)


def test_bicubic_warp_matches_opencv_remap_inside_and_outside_the_image():
    rng = np.random.default_rng(1)
    image = (rng.random((30, 40)) * 255).astype(np.float32)
    flow = rng.normal(0, 2.5, (2, 30, 40)).astype(np.float32)  # many samples fall outside
    yy, xx = np.mgrid[0:30, 0:40].astype(np.float32)
    expected = cv2.remap(image, xx + flow[0], yy + flow[1], cv2.INTER_CUBIC)
    ours = warp_bicubic(torch.from_numpy(image)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-2)


@pytest.mark.parametrize("size", [3, 5])
def test_median_filter_equals_opencv_median_blur(size):
    rng = np.random.default_rng(size)
    smooth = rng.normal(size=(2, 21, 17)).astype(np.float32)
    with_ties = rng.integers(0, 4, (2, 21, 17)).astype(np.float32)
    for field in (smooth, with_ties):
        ours = median_filter(torch.from_numpy(field), size).numpy()
        np.testing.assert_array_equal(ours, np.stack([cv2.medianBlur(f, size) for f in field]))


def test_differences_on_a_ramp():
    yy, xx = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    ramp = (3 * xx + 2 * yy)[None]
    dx, dy = centered_gradient(ramp)
    # central differences inside, half the one-sided difference on the border
    assert torch.equal(dx[0, :, 1:-1], torch.full((6, 5), 3.0))
    assert torch.equal(dx[0, :, [0, -1]], torch.full((6, 2), 1.5))
    assert torch.equal(dy[0, 1:-1], torch.full((4, 7), 2.0)) and torch.equal(dy[0, [0, -1]], torch.full((2, 7), 1.0))
    forward = forward_gradient(ramp)
    assert forward.shape == (1, 2, 6, 7)
    assert torch.equal(forward[0, 0, :, :-1], torch.full((6, 6), 3.0)) and not forward[0, 0, :, -1].any()
    assert torch.equal(forward[0, 1, :-1], torch.full((5, 7), 2.0)) and not forward[0, 1, -1].any()
    # div of (1, 0): +1 on the first column (nothing before it), 0 elsewhere; likewise (0, 1) on the first row
    dual = torch.zeros(1, 2, 6, 7)
    dual[0, 0] = 1.0
    expected = torch.zeros(6, 7)
    expected[:, 0] = 1.0
    assert torch.equal(divergence(dual)[0], expected)
    first_row = torch.zeros(6, 7)
    first_row[0] = 1.0
    assert torch.equal(divergence(dual.flip(1))[0], first_row)


# ---- whole flows against OpenCV --------------------------------------------------------------

def subpixel_pairs():
    """Textures moved by known sub-pixel shifts: [(image0, image1, (dx, dy)), ...]."""
    shifts = [(0.5, 0.3), (-0.3, 0.7), (1.2, -0.4)]
    return [(texture(seed), moved(texture(seed), [[1, 0, dx], [0, 1, dy]]), (dx, dy))
            for seed, (dx, dy) in enumerate(shifts)]


def face_pairs():
    """The astronaut's face under a small head motion, and under a local expression warp."""
    face = astronaut_face()
    head_motion = cv2.getRotationMatrix2D((64, 64), 1.0, 1.01)
    head_motion[:, 2] += (0.4, -0.3)
    return [(face, moved(face, head_motion)), (face, with_expression(face))]


def test_well_conditioned_flows_equal_opencvs_to_rounding():
    params = TVL1Params(nscales=3, warps=3)
    pairs = [(a, b) for a, b, _ in subpixel_pairs()]
    for group in (pairs, face_pairs()):
        for (a, b), flow in zip(group, torch_flows(group, params)):
            assert epe(flow, opencv_flow(a, b, params)).mean() < 1e-3


def test_subpixel_shifts_match_opencv_and_the_truth():
    cases = subpixel_pairs()
    ours = torch_flows([(a, b) for a, b, _ in cases])
    assert ours.shape == (3, 96, 96, 2) and ours.dtype == np.float32
    for (a, b, (dx, dy)), flow in zip(cases, ours):
        reference = opencv_flow(a, b)
        assert epe(flow, reference).mean() < MEAN_EPE_BOUND
        assert mean_strain_difference(flow, reference) < 0.02
        interior = flow[12:-12, 12:-12]
        assert np.mean(np.hypot(interior[..., 0] - dx, interior[..., 1] - dy)) < 0.1


def test_face_pairs_match_opencv_with_the_same_strain():
    pairs = face_pairs()
    for (a, b), flow in zip(pairs, torch_flows(pairs)):
        reference = opencv_flow(a, b)
        assert epe(flow, reference).mean() < MEAN_EPE_BOUND
        assert mean_strain_difference(flow, reference) < 0.02


@pytest.mark.shared_data
def test_real_apex_faces_match_opencv():
    names = ("006_006_1_2.jpg", "006_006_1_3.jpg")
    if not all((APEX_FACES / name).is_file() for name in names):
        pytest.skip(f"needs the real apex faces in {APEX_FACES} (../shared/data/megc2019/README.md)")
    a, b = (cv2.resize(cv2.imread(str(APEX_FACES / name), cv2.IMREAD_GRAYSCALE), (128, 128),
                       interpolation=cv2.INTER_AREA).astype(np.float32) for name in names)
    flow = torch_flows([(a, b)])[0]
    reference = opencv_flow(a, b)
    assert np.hypot(reference[..., 0], reference[..., 1]).mean() > 1.0  # two clips: real, large motion
    assert epe(flow, reference).mean() < MEAN_EPE_BOUND
    assert mean_strain_difference(flow, reference) < 0.02


@pytest.mark.parametrize("settings", [
    dict(gamma=0.1), dict(median_filtering=1), dict(median_filtering=3), dict(scale_step=0.5),
    dict(inner_iterations=10, outer_iterations=2), dict(epsilon=0.05, lambda_=0.3), dict(tau=0.1, theta=0.5),
    dict(nscales=1),
])
def test_every_parameter_acts_as_in_opencv(settings):
    params = TVL1Params(**{"nscales": 3, "warps": 3, **settings})  # well conditioned: equal to rounding
    texture_pair = (texture(5, n=64), moved(texture(5, n=64), [[1, 0, 0.6], [0, 1, -0.4]]))
    face = astronaut_face(64)
    pairs = [texture_pair, (face, with_expression(face))]
    for (a, b), flow in zip(pairs, torch_flows(pairs, params)):
        assert epe(flow, opencv_flow(a, b, params)).mean() < 1e-3


def test_a_pair_in_a_batch_gets_the_flow_it_gets_alone():
    pairs = [(texture(seed, n=48), moved(texture(seed, n=48), [[1, 0, 0.3 * seed], [0, 1, 0.5]])) for seed in range(3)]
    together = torch_flows(pairs)
    alone = np.stack([torch_flows([pair])[0] for pair in pairs])
    np.testing.assert_array_equal(together, alone)


def test_input_dtypes_and_identical_frames():
    a = np.rint(texture(7, n=48)).astype(np.uint8)
    first, second = torch.from_numpy(a)[None], torch.from_numpy(np.roll(a, 1, axis=1))[None]
    from_uint8 = tvl1_flow(first, second)
    assert from_uint8.dtype == torch.float32 and from_uint8.shape == (1, 2, 48, 48)
    assert torch.equal(tvl1_flow(first.double(), second.double()), from_uint8)
    assert tvl1_flow(first, first.clone()).abs().max() < 1e-4


def test_settings_opencv_would_run_differently_are_refused():
    first = torch.zeros(1, 32, 32)
    for settings, field in [(dict(use_initial_flow=True), "use_initial_flow"), (dict(median_filtering=7), "median"),
                            (dict(nscales=0), "nscales"), (dict(scale_step=1.0), "scale_step"),
                            (dict(theta=0.0), "theta")]:
        with pytest.raises(ParameterError, match=field):
            tvl1_flow(first, first, TVL1Params(**settings))
    with pytest.raises(ValueError, match="one shape"):
        tvl1_flow(first, torch.zeros(1, 32, 31))
    with pytest.raises(ValueError, match="one shape"):
        tvl1_flow(first[0], first[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_flow():
    face = astronaut_face()
    first, second = torch.from_numpy(face)[None], torch.from_numpy(with_expression(face))[None]
    on_cpu = tvl1_flow(first, second)
    on_cuda = tvl1_flow(first.cuda(), second.cuda())
    assert on_cuda.device.type == "cuda"
    assert torch.hypot(*(on_cuda.cpu() - on_cpu)[0]).mean() < MEAN_EPE_BOUND
    params = TVL1Params(nscales=3, warps=3)
    well_conditioned = tvl1_flow(first.cuda(), second.cuda(), params).cpu() - tvl1_flow(first, second, params)
    assert torch.hypot(*well_conditioned[0]).mean() < 1e-3
