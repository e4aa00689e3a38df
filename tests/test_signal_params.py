"""The development benchmark's pipeline options: nose_median head motion, the flow column's recorded units."""
import json

import numpy as np

from fr_mer.pipeline.flow import NORMALISATIONS, flow_features
from fr_mer.pipeline.headmotion import FLOW_METHODS, METHODS, compensate, compensate_flow, nose_box
from fr_mer.pipeline.preprocess import PreprocessParams
from fr_mer.pipeline.preprocess.params import FLOW_UNITS


def nose_landmarks(size=64):
    lm = np.full((68, 2), size / 2, dtype=np.float32)
    lm[27:36] = [[28, 20], [28, 24], [28, 28], [28, 32], [24, 36], [26, 37], [28, 38], [30, 37], [32, 36]]
    return lm


def test_nose_median_removes_a_translation_despite_a_local_motion_in_the_nose_box():
    size = 64
    lm = nose_landmarks(size)
    flow = np.zeros((size, size, 2), dtype=np.float32)
    flow[..., 0], flow[..., 1] = 0.7, -0.4  # the head's translation
    top, bottom, left, right = nose_box(lm, flow.shape)
    flow[top:top + 3, left:right] += [3.0, 2.0]  # a wrinkle in a few rows of the box
    out, info = compensate_flow(flow, lm, "nose_median")
    assert info["applied"] and "nose_median" in METHODS and "nose_median" in FLOW_METHODS
    np.testing.assert_allclose(info["field"][:, 2], [0.7, -0.4], atol=1e-6)
    np.testing.assert_allclose(out[bottom:, :], 0.0, atol=1e-6)
    mean_out, _ = compensate_flow(flow, lm, "nose_flow")
    assert np.abs(mean_out[bottom:, :]).max() > 0.1  # the mean takes part of the wrinkle for head motion
    apex = np.zeros((size, size), np.uint8)
    assert compensate(apex, apex, lm, "nose_median")[0] is apex  # no image-stage work


def test_the_flow_column_records_its_normalisation_units_and_size_and_they_round_trip():
    for normalisation in NORMALISATIONS:
        params = PreprocessParams(normalisation=normalisation, flow_size=96, head_motion="nose_median")
        attrs = params.array_specs()["flow"].attrs
        assert attrs["normalisation"] == normalisation and attrs["flow_size"] == 96
        assert attrs["units"] == FLOW_UNITS[normalisation]
        assert PreprocessParams.from_dict(json.loads(json.dumps(params.as_dict()))) == params


def test_raw_units_convert_to_the_scale_free_unit_by_the_recorded_flow_size():
    # The same face motion (a fraction of the face side) at two flow sizes: raw values scale with
    # the size, and dividing by the recorded flow_size gives one value.
    fraction = 0.01
    values = {}
    for size in (128, 256):
        u = np.full((size, size), fraction * size, np.float32)
        v = np.zeros_like(u)
        raw = flow_features(u, v, np.zeros_like(u), normalisation="none")
        values[size] = raw[0] / PreprocessParams(flow_size=size, normalisation="none").array_specs()[
            "flow"].attrs["flow_size"]
    np.testing.assert_allclose(values[128], fraction, rtol=1e-6)
    np.testing.assert_allclose(values[256], values[128], rtol=1e-6)
