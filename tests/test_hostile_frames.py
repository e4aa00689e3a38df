"""Suspicious frames are flagged, in the scan table and in the cache (issue 27, item 4).

A blank (all black, one colour) or noise onset or apex, a JPEG frame carrying an
EXIF orientation, and two files that map to one frame number are each made into
a sample as before, but never silently: the scan table marks the clip repaired
with the reason, and the cache's flags name what was seen.
"""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fr_mer.cli import main
from fr_mer.pipeline.cache import read_cache
from fr_mer.pipeline.layouts import write_casme2
from fr_mer.pipeline.preprocess import PreprocessParams, preprocess, process_pair
from fr_mer.pipeline.frame_checks import content_flags, exif_orientation
from fr_mer.pipeline.readers import read_database
from fr_mer.pipeline.scan import read_scan_table
from tests.conftest import CASME2_CLIPS
from tests.test_preprocess import FAST, astronaut_frame, write_face_smic


def scan_table(tmp_path, *args):
    table = tmp_path / "table.csv"
    result = CliRunner().invoke(main, ["scan", *map(str, args), "--out", str(table)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return read_scan_table(table), result.output


def _rotated_jpeg(path, image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, exif=exif)


# -- blank and noise frames -----------------------------------------------------------------------
def test_content_flags():
    rng = np.random.default_rng(0)
    assert content_flags(np.zeros((240, 320), np.uint8), "apex") == ["apex_blank"]
    assert content_flags(np.full((240, 320), 200, np.uint8), "onset") == ["onset_blank"]
    assert content_flags(rng.integers(0, 256, (240, 320), dtype=np.uint8), "apex") == ["apex_noise"]
    assert content_flags(astronaut_frame(), "apex") == []


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_a_blank_or_noise_apex_is_flagged_in_the_sample(kind):
    onset = astronaut_frame()
    apex = (np.zeros_like(onset) if kind == "blank"
            else np.random.default_rng(1).integers(0, 256, onset.shape, dtype=np.uint8))
    sample = process_pair(onset, apex, PreprocessParams(**FAST))
    assert f"apex_{kind}" in sample.flags and "onset_blank" not in sample.flags


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_a_blank_or_noise_apex_is_flagged_in_the_scan_table(tmp_path, kind):
    root = tmp_path / "c"
    write_casme2(root, CASME2_CLIPS[:2])
    rows, _ = scan_table(tmp_path, "--dataset", "casme2", "--root", root)
    apex = rows[0]["apex_path"]
    picture = (np.zeros((24, 32), np.uint8) if kind == "blank"
               else np.random.default_rng(2).integers(0, 256, (24, 32), dtype=np.uint8))
    assert cv2.imwrite(apex, picture)
    rows, _ = scan_table(tmp_path, "--dataset", "casme2", "--root", root)
    flagged = [r for r in rows if f"looks {kind}" in r["problem"]]
    assert len(flagged) == 1 and flagged[0]["apex_path"] == apex and flagged[0]["status"] == "repaired"
    assert f"apex_{kind}" in flagged[0]["problem"]


# -- EXIF orientation -------------------------------------------------------------------------------
def test_exif_orientation_is_read_from_the_jpeg_header(tmp_path):
    image = astronaut_frame()
    _rotated_jpeg(tmp_path / "r.jpg", image, 6)
    Image.fromarray(image).save(tmp_path / "plain.jpg")
    cv2.imwrite(str(tmp_path / "p.png"), image)
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe1\x00\x04")
    assert [exif_orientation(tmp_path / n) for n in ("r.jpg", "plain.jpg", "p.png", "junk.jpg")] == [6, 1, 1, 1]


def test_a_rotated_apex_is_flagged_in_the_scan_table_and_the_cache(tmp_path):
    root = tmp_path / "smic"
    write_face_smic(root, 2)
    apex = sorted(p for p in root.rglob("image000003.bmp") if "HS" in p.parts)[0]
    _rotated_jpeg(apex.with_suffix(".jpg"), cv2.imread(str(apex), cv2.IMREAD_GRAYSCALE), 3)
    apex.unlink()
    rows, _ = scan_table(tmp_path, "--dataset", "smic", "--root", root)
    rotated = [r for r in rows if "EXIF orientation 3" in r["problem"]]
    assert len(rotated) == 1 and rotated[0]["status"] == "repaired"
    cache = tmp_path / "c.h5"
    preprocess(read_database("smic", root), cache, PreprocessParams(**FAST), jobs=1)
    stored = read_cache(cache)
    flags = dict(zip(stored.keys, stored.meta["flags"]))
    key = f"smic/{rotated[0]['subject']}/{rotated[0]['clip']}"
    assert "exif_rotated" in flags[key] and "repaired" in flags[key]
    assert not any("exif_rotated" in f for k, f in flags.items() if k != key)


# -- two files, one frame number --------------------------------------------------------------------
def test_two_files_for_one_frame_number_are_named(tmp_path):
    root = tmp_path / "c"
    write_casme2(root, CASME2_CLIPS[:1])
    rows, _ = scan_table(tmp_path, "--dataset", "casme2", "--root", root)
    apex = rows[0]["apex_path"]
    from pathlib import Path

    apex = Path(apex)
    number = int(rows[0]["apex_frame"])
    twin = apex.with_name(apex.name.replace(str(number), f"{number:05d}"))
    assert twin != apex
    shutil.copy(apex, twin)
    rows, output = scan_table(tmp_path, "--dataset", "casme2", "--root", root)
    assert rows[0]["status"] == "repaired"
    assert f"frame {number} has 2 files" in rows[0]["problem"]
    assert apex.name in rows[0]["problem"] and twin.name in rows[0]["problem"]
    assert "[repaired]" in output
