"""CAS(ME)^3's 1280x720 frames through scan and preprocess: a synthetic part A tree
(`fr-mer synth --layout casme3`) scans as all ok, and every clip's face is found by
detecting on the copy downscaled to the detector's side (the landmarks fitted on the full frame)."""
import numpy as np
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.pipeline.align import NO_FACE_WHOLE_FRAME, AlignParams
from fr_mer.pipeline.cache import read_cache
from fr_mer.pipeline.scan import read_scan_table


def test_synthetic_casme3_scans_ok_and_preprocess_finds_every_face(tmp_path):
    runner = CliRunner()
    tree = tmp_path / "casme3"
    result = runner.invoke(main, ["synth", "--out", str(tree), "--layout", "casme3", "--subjects", "1",
                                  "--clips-per-subject", "3", "--seed", "4"])
    assert result.exit_code == 0, result.output
    annotations = tree / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
    source = ["--dataset", "casme3", "--root", str(tree / "part_A"), "--annotations", str(annotations)]
    table = tmp_path / "scan.csv"
    result = runner.invoke(main, ["scan", *source, "--out", str(table)])
    assert result.exit_code == 0, result.output
    rows = read_scan_table(table)
    assert len(rows) == 3 and {row["status"] for row in rows} == {"ok"}
    assert all(1 <= int(row["objective_class"]) <= 7 for row in rows)

    assert AlignParams().detect_max_side < 1280  # the frames are shrunk for the detector
    cache_path = tmp_path / "casme3.h5"
    result = runner.invoke(main, ["preprocess", *source, "--out", str(cache_path), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    cache = read_cache(cache_path, arrays=["landmarks"])
    assert len(cache) == 3 and not cache.failures
    assert not any(NO_FACE_WHOLE_FRAME in flags for flags in cache.meta["flags"])
    assert np.isfinite(cache.arrays["landmarks"]).all()
    # the objective class travels from the annotation file into the cache
    by_key = {f"casme3/{row['subject']}/{row['clip']}": int(row["objective_class"]) for row in rows}
    assert dict(zip(cache.keys, cache.meta["objective_class"])) == by_key
