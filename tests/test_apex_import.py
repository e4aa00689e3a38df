"""`fr-mer import-ststnet --apex-faces`: the release's apex faces aligned by fr-mer's rule, with landmarks."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fr_mer.apex_alignment import FACE_BOX_WHOLE_CROP, apex_face_names, crop_to_flow
from fr_mer.cli import main
from fr_mer.pipeline.align import AlignParams, FaceAligner, eye_centres
from fr_mer.pipeline.cache import read_cache

MEGC2019 = Path(__file__).resolve().parents[2] / "shared" / "data" / "megc2019"
NEEDS_RELEASE = pytest.mark.skipif(
    not (MEGC2019 / "apex_faces").is_dir() or not (MEGC2019 / "ststnet_flow").is_dir(),
    reason=f"the released apex faces and flow images are not at {MEGC2019}",
)
#: Official list rows: a CASME II face and a SMIC face dlib's detector misses (the whole-crop fallback;
#: SMIC named as on disk, s1_po_01) and a SAMM face it finds.
ROWS = ("casme2,sub07,EP01_01,0", "smic,s19,s19_po_01,1", "samm,6,006_1_2,0")
COLUMNS = ["apex_face", "landmarks", "align_matrix", "flow_landmarks", "flow"]


def test_apex_face_names_follow_the_release():
    assert apex_face_names("casme2", "sub01", "EP02_01f") == ["sub01_EP02_01f.jpg"]
    assert apex_face_names("samm", "006", "006_1_2") == ["006_006_1_2.jpg"]
    assert apex_face_names("smic", "s01", "s01_ne_01")[0] == "s01_s1_ne_01.jpg"


def test_crop_points_map_onto_the_flow_grid_with_pixel_centres_kept():
    points = np.array([[-0.5, -0.5], [223.5, 223.5], [111.5, 55.5]])
    assert np.allclose(crop_to_flow(points, (224, 224)), [[-0.5, -0.5], [27.5, 27.5], [13.5, 6.5]])
    assert np.allclose(crop_to_flow([[99.5, 49.5]], (100, 200)), [[13.5, 13.5]])


def test_face_options_need_apex_faces(tmp_path):
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(main, ["import-ststnet", "--images", str(tmp_path / "images"), "--face-size", "64",
                                       "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 2
    assert "--apex-faces" in result.output


@NEEDS_RELEASE
def test_a_few_faces(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    for name in ("sub07_EP01_01.jpg", "s19_s19_po_01.jpg", "006_006_1_2.jpg"):
        shutil.copy(MEGC2019 / "apex_faces" / name, faces / name)
    listing = tmp_path / "list.csv"
    listing.write_text("\r\n".join(ROWS) + "\r\n")
    out = tmp_path / "c.h5"
    result = CliRunner().invoke(main, ["import-ststnet", "--images", str(MEGC2019 / "ststnet_flow"),
                                       "--labels", str(listing), "--apex-faces", str(faces),
                                       "--face-size", "96", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 written" in result.output and "0 failed" in result.output
    assert f"flags: {FACE_BOX_WHOLE_CROP} 2" in result.output
    cache = read_cache(out, arrays=COLUMNS)
    assert cache.arrays["apex_face"].shape == (3, 96, 96) and cache.arrays["apex_face"].dtype == np.uint8
    assert np.isfinite(cache.arrays["landmarks"]).all() and np.isfinite(cache.arrays["flow_landmarks"]).all()
    flags = dict(zip(cache.keys, cache.meta["flags"]))
    assert FACE_BOX_WHOLE_CROP in flags["casme2/sub07/EP01_01"] and FACE_BOX_WHOLE_CROP in flags["smic/s19/s19_po_01"]
    assert FACE_BOX_WHOLE_CROP not in flags["samm/006/006_1_2"]
    template = FaceAligner(AlignParams(face_size=96)).template_eyes()
    for i in range(3):
        # fr-mer's rule: the eye centres land on the canonical template
        assert np.allclose(eye_centres(cache.arrays["landmarks"][i]), template, atol=1e-3)
        # the flow's landmarks are the same points, mapped back through the alignment and onto 28 px
        matrix = np.vstack([cache.arrays["align_matrix"][i], [0, 0, 1]])
        crop = (np.linalg.inv(matrix) @ np.c_[cache.arrays["landmarks"][i], np.ones(68)].T).T[:, :2]
        assert np.allclose(crop_to_flow(crop, (224, 224)), cache.arrays["flow_landmarks"][i], atol=1e-3)
    # resuming adds nothing; a missing face is a failure that names the file, never a silent drop
    (faces / "006_006_1_2.jpg").unlink()
    result = CliRunner().invoke(main, ["import-ststnet", "--images", str(MEGC2019 / "ststnet_flow"),
                                       "--labels", str(listing), "--apex-faces", str(faces),
                                       "--face-size", "96", "--out", str(tmp_path / "d.h5")])
    assert result.exit_code == 0, result.output
    assert "2 written" in result.output and "1 failed" in result.output
    assert "006_006_1_2.jpg" in result.output


@NEEDS_RELEASE
def test_all_442_samples_get_a_face_and_landmarks(tmp_path):
    out = tmp_path / "megc2019.h5"
    result = CliRunner().invoke(main, ["import-ststnet", "--images", str(MEGC2019 / "ststnet_flow"),
                                       "--labels", str(MEGC2019 / "combined_3class_gt.csv"),
                                       "--apex-faces", str(MEGC2019 / "apex_faces"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "442 written" in result.output and "0 failed" in result.output
    cache = read_cache(out, arrays=["apex_face", "landmarks", "flow_landmarks"])
    assert len(cache) == 442 and not cache.failures
    assert np.isfinite(cache.arrays["landmarks"]).all() and np.isfinite(cache.arrays["flow_landmarks"]).all()
    assert (cache.arrays["apex_face"].reshape(442, -1).std(axis=1) > 5).all()  # a face, not a flat fill
