"""TV-L1 flow on known sub-pixel shifts, its parameters, and the model input features."""
import cv2
import numpy as np
import pytest

from fr_mer.config import from_record, to_record
from fr_mer.pipeline.flow import NORMALISATIONS, TVL1Params, flow_features, tvl1_flow

N, BORDER = 96, 12


def texture(seed=0, n=N, sigma=2.0):
    """Smooth random texture on the 0..255 scale, float32."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((n, n)).astype(np.float32), (0, 0), sigma)
    return (t - t.min()) / (t.max() - t.min()) * 255


def shifted(image, dx, dy):
    """image moved by (+dx, +dy): result[y, x] = image[y - dy, x - dx] (bicubic)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def interior_epe(flow, dx, dy):
    f = flow[BORDER:-BORDER, BORDER:-BORDER]
    return float(np.mean(np.hypot(f[..., 0] - dx, f[..., 1] - dy)))


@pytest.mark.parametrize("dx,dy", [(0.5, 0.3), (-0.3, 0.7)])
def test_subpixel_shift_is_recovered(dx, dy):
    a = texture()
    flow = tvl1_flow(a, shifted(a, dx, dy))
    assert flow.shape == (N, N, 2) and flow.dtype == np.float32
    assert interior_epe(flow, dx, dy) < 0.1


def test_uint8_input_is_recovered_too():
    a = texture(1)
    b = shifted(a, 0.5, 0.3)
    flow = tvl1_flow(np.rint(a).astype(np.uint8), np.rint(b).astype(np.uint8))
    assert interior_epe(flow, 0.5, 0.3) < 0.1


def test_float_input_is_read_on_the_8bit_scale():
    # OpenCV would read float images as 0..1: a float frame on 0..255 must give
    # the same flow as its uint8 version
    a = np.rint(texture(2)).astype(np.uint8)
    b = np.rint(shifted(a.astype(np.float32), 0.5, 0.3)).astype(np.uint8)
    from_uint8 = tvl1_flow(a, b)
    from_float = tvl1_flow(a.astype(np.float32), b.astype(np.float64))
    np.testing.assert_allclose(from_float, from_uint8, atol=1e-3)


def test_identical_frames_give_zero_flow():
    a = texture(3)
    assert np.abs(tvl1_flow(a, a.copy())).max() < 1e-4


def test_shape_mismatch_and_colour_rejected():
    with pytest.raises(ValueError, match="same shape"):
        tvl1_flow(np.zeros((10, 12)), np.zeros((12, 10)))
    with pytest.raises(ValueError, match="grayscale"):
        tvl1_flow(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8))


def test_params_are_opencv_defaults_and_reach_the_solver():
    default = cv2.optflow.DualTVL1OpticalFlow_create()
    solver = TVL1Params().create()
    for getter in ("Tau", "Lambda", "Theta", "ScalesNumber", "WarpingsNumber", "Epsilon", "InnerIterations",
                   "OuterIterations", "ScaleStep", "Gamma", "MedianFiltering", "UseInitialFlow"):
        assert getattr(solver, "get" + getter)() == pytest.approx(getattr(default, "get" + getter)())
    p = TVL1Params(tau=0.2, lambda_=0.3, nscales=3, warps=2, inner_iterations=7, median_filtering=3)
    s = p.create()
    assert (s.getTau(), s.getLambda(), s.getScalesNumber(), s.getWarpingsNumber(), s.getInnerIterations(),
            s.getMedianFiltering()) == pytest.approx((0.2, 0.3, 3, 2, 7, 3))
    assert TVL1Params(**to_record(p)) == p
    assert to_record(p)["lambda_"] == 0.3
    assert from_record(TVL1Params, to_record(p)) == p


def ramps(n=56):
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    return x / n, -y / n, np.full((n, n), 0.25, np.float32)


def test_features_channel_order_and_minmax255():
    u, v, strain = ramps()
    feats = flow_features(u, v, strain, normalisation="minmax255")
    assert feats.shape == (3, 28, 28) and feats.dtype == np.float32
    # u grows to the right, v (here -y) shrinks downwards: each spans exactly 0..255
    assert feats[0, 0, 0] == 0 and feats[0, 0, -1] == pytest.approx(255)
    assert feats[1, 0, 0] == pytest.approx(255) and feats[1, -1, 0] == 0
    assert np.all(np.diff(feats[0], axis=1) > 0) and np.all(np.diff(feats[1], axis=0) < 0)
    # a constant channel has nothing to scale: it becomes 0
    np.testing.assert_array_equal(feats[2], 0)


def test_features_none_keeps_raw_pixels_box_averaged():
    u, v, strain = ramps()
    feats = flow_features(u, v, strain, size=14, normalisation="none")
    assert feats.shape == (3, 14, 14)
    # INTER_AREA by 4: each output pixel is the mean of a 4x4 block
    np.testing.assert_allclose(feats[0], u.reshape(14, 4, 14, 4).mean(axis=(1, 3)), atol=1e-6)
    np.testing.assert_allclose(feats[2], 0.25, atol=1e-7)


def test_features_reject_unknown_normalisation_and_shapes():
    u, v, strain = ramps()
    assert set(NORMALISATIONS) == {"minmax255", "none"}
    with pytest.raises(ValueError, match="normalisation"):
        flow_features(u, v, strain, normalisation="zscore")
    with pytest.raises(ValueError, match="one shape"):
        flow_features(u, v[:10], strain)
