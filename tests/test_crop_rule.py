"""The crop rule (``--align crop=auto|frame|template``): a cropped release keeps its own face crop,
raw frames get the eye template, the cache says which, and a cache or checkpoint recorded before the
rule existed reads as the template it was made with."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from fr_mer.pipeline.align import AlignParams, whole_frame_matrix
from fr_mer.pipeline.cache import CacheError, read_cache
from fr_mer.pipeline.preprocess import PreprocessParams, PreprocessRun, preprocess, process_clip
from tests.test_preprocess import FAST, astronaut_frame, make_clip, matrix_scale


def cropped_shift_clip(folder, dx: float):
    """A CASME II ``Cropped`` clip (``reg_img`` frames): onset at rest, apex moved right by ``dx`` px."""
    clip = make_clip(folder / "Cropped", {10: astronaut_frame(), 11: astronaut_frame(dx), 12: astronaut_frame(dx)},
                     apex=11)
    renamed = {}
    for number, path in clip.frames.items():
        renamed[number] = path.with_name(f"reg_{path.name}")
        path.rename(renamed[number])
    clip.frames = renamed
    return clip


def test_a_cropped_release_keeps_its_frame_and_the_flow_is_in_its_units(tmp_path):
    clip = cropped_shift_clip(tmp_path, 2.0)
    params = PreprocessParams(normalisation="none", **FAST)
    sample = process_clip(clip, params)
    assert "release_crop" in sample.meta["flags"]
    shape = astronaut_frame().shape
    np.testing.assert_allclose(sample.arrays["align_matrix"], whole_frame_matrix(shape, params.face_size), atol=1e-6)
    u, v, _ = sample.arrays["flow"]
    # the 320 px wide frame scaled edge to edge onto the 64 px flow crop: 2 px become 2 * 64 / 320
    inner = (slice(6, 22), slice(6, 22))
    assert u[inner].mean() == pytest.approx(2.0 * params.flow_size / shape[1], abs=0.06)
    assert abs(v[inner].mean()) < 0.05
    assert np.isfinite(sample.arrays["landmarks"]).all()  # the face was found and mapped into the crop


def test_the_template_rule_and_raw_frames_align_on_the_eyes(tmp_path):
    cropped = process_clip(cropped_shift_clip(tmp_path / "a", 1.0),
                           PreprocessParams(**FAST, align=AlignParams(crop="template")))
    raw = process_clip(make_clip(tmp_path / "b", {10: astronaut_frame(), 11: astronaut_frame(1.0)}, apex=11),
                       PreprocessParams(**FAST))
    for sample in (cropped, raw):
        assert "release_crop" not in sample.meta["flags"]
        assert matrix_scale(sample.arrays["align_matrix"]) != pytest.approx(
            matrix_scale(whole_frame_matrix(astronaut_frame().shape, 128)), rel=0.05)


def test_records_made_before_the_rule_read_as_the_template(tmp_path):
    record = PreprocessParams(**FAST).as_dict()
    del record["align"]["crop"]
    assert PreprocessParams.from_dict(record).align.crop == "template"
    # a cache written before the rule existed resumes with the template, and is refused with auto
    clips = [cropped_shift_clip(tmp_path, 1.0)]
    out = tmp_path / "old.h5"
    template = PreprocessParams(**FAST, align=AlignParams(crop="template"))
    preprocess(clips, out, template, jobs=1)
    with h5py.File(out, "r+") as handle:
        params = json.loads(handle.attrs["params"])
        del params["align"]["crop"]
        handle.attrs["params"] = json.dumps(params)
    assert preprocess(clips, out, template, jobs=1).skipped == 1
    with pytest.raises(CacheError, match="align"):
        PreprocessRun(clips, out, PreprocessParams(**FAST), jobs=1)
    assert len(read_cache(out)) == 1
