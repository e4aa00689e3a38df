"""The real development benchmark's scripts on two real CASME II subjects (skipped without ../shared):
scan -> preprocess -> probe -> FR for a variant and the released flows on exactly the same samples,
the stage-by-stage sweep, and the table made from what they stored."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEV = SHARED / "casme2-real"
RELEASED = SHARED / "megc2019" / "ststnet_flow"

pytestmark = pytest.mark.skipif(not (DEV / "Cropped").is_dir() or not RELEASED.is_dir(),
                                reason="the real CASME II development set (../shared/data/casme2-real) "
                                       "and STSTNet's released images (../shared/data/megc2019) are absent")


def run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_realdev_on_two_subjects_scores_every_row_on_the_same_samples(tmp_path):
    out = tmp_path / "out"
    run("realdev.py", "--root", str(DEV), "--released", str(RELEASED), "--out", str(out),
        "--work", str(tmp_path / "work"), "--variants", "default", "--seeds", "1", "--subjects", "sub06,sub15",
        "--fr-option=--epochs=1")
    listed = {f"{r[0]}/{r[1]}/{r[2]}" for r in csv.reader(open(out / "dev3.csv"))}
    # sub06 and sub15's composite samples that have frames in the development set: each subject has all
    # three classes, so FR's training side of either fold has every class (sub01 has no surprise clip)
    assert listed and {k.split("/")[1] for k in listed} == {"sub06", "sub15"}
    for row in ("default", "released-ststnet"):
        for name in ("probe-uvs", "probe-uv", "fr"):
            with open(out / row / name / "predictions.csv") as handle:
                assert {r["sample"] for r in csv.DictReader(handle)} == listed, (row, name)
    record = json.loads((out / "default" / "preprocess.json").read_text())
    assert record["samples"] >= len(listed) and record["cpu_seconds_per_sample"] > 0
    table = run("realdev_table.py", str(out))
    assert "| `fr-mer preprocess` defaults |" in table and "| STSTNet's released" in table


def test_realbench_probes_each_variant_and_the_released_images_on_the_same_samples(tmp_path):
    run("realbench.py", "--root", str(DEV), "--released", str(RELEASED), "--out", str(tmp_path),
        "--subjects", "sub01,sub02", "--flows", "frame-28")
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    three = [r for r in rows if r["space"] == "composite3"]
    assert {r["variant"] for r in three} == {"frame-28|none|none", "frame-28|none|minmax255",
                                             "frame-28|nose_median|none", "frame-28|nose_median|minmax255",
                                             "released-ststnet|as released|minmax255"}
    assert len({r["n"] for r in three}) == 1 and all(0 <= r["uf1"] <= 1 for r in rows)
