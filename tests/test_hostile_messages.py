"""Messages that name the cause (issue 27, item 5).

Each case asserts the exit status, that the message names the cell and row, the
option, the subject or the file, that no traceback is printed, and that nothing
else was lost (the other rows read, no half-written file).
"""
from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from fr_mer.pipeline.layouts import write_casme2
from fr_mer.pipeline.scan import read_scan_table
from tests.cachefactory import small_composite, write_flow_cache
from tests.conftest import CASME2_CLIPS
from tests.test_compare import PRED_A, PRED_B, write_run
from tests.cli import run, refused


# -- a file name longer than a file system takes: that row only --------------------------------------
def test_a_too_long_file_name_fails_only_its_row(tmp_path):
    root = tmp_path / "c"
    row = {"Subject": 1, "Filename": "E" * 300, "OnsetFrame": 1, "ApexFrame": 2, "OffsetFrame": 3,
           "Estimated Emotion": "disgust"}
    write_casme2(root, CASME2_CLIPS[:2], extra_rows=[row])
    table = tmp_path / "t.csv"
    result = run("scan", "--dataset", "casme2", "--root", root, "--out", table)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    rows = read_scan_table(table)
    long_row = next(r for r in rows if r["clip"].startswith("EEEE"))
    assert long_row["status"] == "unusable" and "Filename cell holds 300 bytes" in long_row["problem"]
    assert long_row["row"] == "4" and "row 4" in result.output
    assert sum(r["status"] != "unusable" for r in rows) == 2  # the other rows read


# -- scan --out - with standard output closed ---------------------------------------------------------
def test_scan_to_a_closed_stdout_names_it(tmp_path):
    root = tmp_path / "c"
    write_casme2(root, CASME2_CLIPS[:1])
    fr_mer = Path(sys.executable).with_name("fr-mer")
    done = subprocess.run(f"'{fr_mer}' scan --dataset casme2 --root '{root}' >&-", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "--out -" in done.stderr and "standard output" in done.stderr


# -- compare: stray bytes in predictions.csv, a full disk ---------------------------------------------
@pytest.mark.parametrize("damage, named", [
    (lambda data: data[:200] + b"\xff\xfe" + data[200:], "not UTF-8"),
    (lambda data: data[:200] + b"\x00" + data[200:], "NUL byte"),
    (lambda data: data + b"stray,cells\n", "row 56"),
])
def test_compare_on_a_predictions_csv_with_stray_bytes(tmp_path, damage, named):
    run_a, run_b = write_run(tmp_path / "a", PRED_A), write_run(tmp_path / "b", PRED_B)
    table = run_b / "predictions.csv"
    table.write_bytes(damage(table.read_bytes()))
    refused(run("compare", run_a, run_b), 1, table, named)


def test_compare_on_a_full_disk_leaves_no_half_written_file(tmp_path, monkeypatch):
    run_a, run_b = write_run(tmp_path / "a", PRED_A), write_run(tmp_path / "b", PRED_B)
    real_write = Path.write_text

    def full_disk(self, data, *args, **kwargs):
        real_write(self, data[:10], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    out = tmp_path / "report.json"
    refused(run("compare", run_a, run_b, "--json", out), 1, out, "No space left on device")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "a", tmp_path / "b"]  # neither the file nor a temporary one


# -- evaluate: a subject the cache lacks, --val-fraction emptying a class ----------------------------
def test_a_composite_list_naming_a_subject_the_cache_lacks_names_it(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    with open(listing, "a") as handle:
        handle.write("casme2,sub09,EP01_01,0\r\ncasme2,sub09,EP01_02,1\r\n")
    result = run("evaluate", "--cache", cache, "--composite-list", listing, "--model", "ststnet", "--seeds", 1,
                 "--epochs", 1, "--batch-size", 16, "--threads", 1, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "without a fold (not evaluated): casme2/sub09" in result.output


def test_val_fraction_that_empties_a_class_is_named(tmp_path):
    # one class per subject, two subjects per class: holding out 4 of a fold's 5 training subjects
    # leaves one subject, one class
    rows = [("casme2", f"sub0{s}", f"sub0{s}_{k}", ("negative", "positive", "surprise")[(s - 1) // 2])
            for s in range(1, 7) for k in range(2)]
    cache = write_flow_cache(tmp_path / "c.h5", rows)
    result = run("evaluate", "--cache", cache, "--protocol", "loso", "--model", "ststnet", "--seeds", 1,
                 "--epochs", 1, "--batch-size", 4, "--threads", 1, "--fold-batch", 1, "--val-fraction", 0.8,
                 "--out", tmp_path / "out")
    refused(result, 1, "--val-fraction 0.8", "lower --val-fraction", "no sample of class")
