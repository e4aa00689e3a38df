"""Every number checked at the boundary, and readers' errors that name the cause (issue 27, items 2 and 5).

Each case asserts the exit status (1 for a bad input, 2 for an option click refuses),
that the message names the option, file or row, that no traceback is printed, and
that nothing was written.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import openpyxl
import pytest
import torch
from PIL import Image

from fr_mer.checkpoint import save_checkpoint
from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_SHEET_CELLS, check_number
from fr_mer.models import Recipe, create_model
from fr_mer.pipeline.flow import TVL1Params
from fr_mer.pipeline.layouts import write_casme2, write_smic
from fr_mer.pipeline.preprocess import PreprocessParams
from fr_mer.pipeline.xlsx import SheetError, cell_int, read_table
from tests.cachefactory import small_composite
from tests.conftest import CASME2_CLIPS, SMIC_CLIPS
from tests.cli import run, refused


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    return small_composite(tmp_path_factory.mktemp("numbers"), subjects_per_db=1)


# -- the one check ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "1", None])
def test_check_number_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(ParameterError, match="lr"):
        check_number("lr", value, low=0, low_open=True)


def test_check_number_bounds():
    check_number("n", 5, low=1, high=5, integer=True)
    check_number("n", np.int64(3), low=1, integer=True)
    for value, kwargs in ((0, {"low": 0, "low_open": True}), (6, {"high": 5}), (1.5, {"integer": True})):
        with pytest.raises(ParameterError):
            check_number("n", value, **kwargs)


# -- options with an upper bound (no segfault, no hour-long run) --------------------------------
def test_evaluate_threads_100000_is_refused_before_torch_sees_it(composite, tmp_path):
    cache, listing = composite
    result = run("evaluate", "--cache", cache, "--composite-list", listing, "--model", "ststnet",
                 "--threads", 100000, "--out", tmp_path / "out")
    refused(result, 2, "--threads")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["evaluate", "probe", "demo"])
def test_jobs_100000_is_refused_by_every_command_that_has_workers(composite, tmp_path, command):
    cache, listing = composite
    inputs = [] if command == "demo" else ["--cache", cache, "--composite-list", listing]
    refused(run(command, *inputs, "--jobs", 100000, "--out", tmp_path / "out"), 2, "--jobs")
    assert not (tmp_path / "out").exists()


def test_compare_bootstrap_without_bound_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    refused(run("compare", tmp_path / "a", tmp_path / "b", "--bootstrap", 100_000_000), 2, "--bootstrap")


@pytest.mark.parametrize("size", ["100000x100000", "5000x240"])
def test_synth_size_without_bound_is_refused(tmp_path, size):
    refused(run("synth", "--size", size, "--out", tmp_path / "s"), 2, "--size", "at most")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("option", ["--flow-size", "--feature-size", "--face-size", "--jobs", "--flow-threads"])
def test_preprocess_sizes_without_bound_are_refused(tmp_path, option):
    root = tmp_path / "smic"
    write_smic(root, SMIC_CLIPS[:2])
    refused(run("preprocess", "--dataset", "smic", "--root", root, option, 100000, "--out", tmp_path / "c.h5"), 2,
            option)
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize("option, value, status", [
    ("--seeds", 10**9, 2), ("--first-seed", 2**40, 2), ("--epochs", 10**9, 1), ("--batch-size", 10**9, 1),
    ("--fold-batch", 10**9, 2),
])
def test_evaluate_counts_without_bound_are_refused(composite, tmp_path, option, value, status):
    cache, listing = composite
    result = run("evaluate", "--cache", cache, "--composite-list", listing, "--model", "ststnet", option, value,
                 "--out", tmp_path / "out")
    refused(result, status, option)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value", [("--subjects", 10**6), ("--clips-per-subject", 10**6), ("--seed", -1),
                                           ("--seed", 2**40)])
def test_synth_counts_and_seeds_out_of_range_are_refused(tmp_path, option, value):
    refused(run("synth", option, value, "--out", tmp_path / "s"), 2, option)
    assert not (tmp_path / "s").exists()


# -- TV-L1 parameters: finite and positive, by name --------------------------------------------
@pytest.mark.parametrize("item", ["tau=nan", "tau=-1", "warps=0", "lambda_=inf", "theta=0", "epsilon=nan",
                                  "scale_step=1.5", "nscales=0", "median_filtering=4", "median_filtering=7"])
def test_tvl1_settings_that_ruin_the_flow_are_refused(tmp_path, item):
    root = tmp_path / "smic"
    write_smic(root, SMIC_CLIPS[:2])
    result = run("preprocess", "--dataset", "smic", "--root", root, "--tvl1", item, "--out", tmp_path / "c.h5")
    refused(result, 2, "--tvl1", item.split("=")[0])
    assert not (tmp_path / "c.h5").exists()


def test_tvl1_defaults_and_a_recorded_cache_stay_valid():
    assert TVL1Params() == TVL1Params(median_filtering=5)
    with pytest.raises(ParameterError, match="tau"):
        PreprocessParams.from_dict({**PreprocessParams().as_dict(), "tvl1": {"tau": -1.0}})


# -- learning rates: finite and > 0, also in a --select grid ------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "-0.1"])
def test_lr_that_is_not_a_positive_number_is_refused(composite, tmp_path, value):
    cache, listing = composite
    for command in ("evaluate", "train"):
        out = tmp_path / f"{command}.out"
        result = run(command, "--cache", cache, "--composite-list", listing, "--model", "ststnet", "--lr", value,
                     "--out", out)
        refused(result, 1, "--lr")
        assert not out.exists()


@pytest.mark.parametrize("value", ["Infinity", "NaN", "-1"])
def test_lr_in_a_select_grid_that_is_not_a_positive_number_is_refused(composite, tmp_path, value):
    cache, listing = composite
    grid = tmp_path / "grid.json"
    grid.write_text('{"recipe": {"lr": [0.001, %s]}}' % value)
    result = run("evaluate", "--cache", cache, "--composite-list", listing, "--model", "ststnet", "--select", grid,
                 "--out", tmp_path / "out")
    refused(result, 1, "--select", grid, "lr")
    assert not (tmp_path / "out").exists()


def test_recipe_refuses_infinite_weight_decay():
    with pytest.raises(ParameterError, match="weight_decay"):
        Recipe(weight_decay=math.inf)


# -- a checkpoint's recorded flow size, a checkpoint of a later format -------------------------
def _checkpoint(path, **params):
    model = create_model("ststnet")
    recorded = {**PreprocessParams().as_dict(), **params}
    save_checkpoint(path, model, fold=None, seed=0, recipe=model.recipe, preprocess_params=recorded)
    return path


def _pair(tmp_path, size=(64, 64)):
    paths = []
    for name in ("onset.png", "apex.png"):
        Image.fromarray(np.full(size[::-1], 128, np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def test_predict_with_a_checkpoint_recording_flow_size_100000(tmp_path):
    checkpoint = _checkpoint(tmp_path / "m.pt", flow_size=100000)
    onset, apex = _pair(tmp_path)
    refused(run("predict", "--model", checkpoint, "--onset", onset, "--apex", apex), 1, checkpoint, "flow size")


def test_a_checkpoint_of_format_version_99_is_refused(tmp_path):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    payload = torch.load(checkpoint, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, checkpoint)
    onset, apex = _pair(tmp_path)
    refused(run("predict", "--model", checkpoint, "--onset", onset, "--apex", apex), 1, checkpoint,
            "format_version 99")


def test_predict_on_1x1_images_names_them(tmp_path):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    onset, apex = _pair(tmp_path, size=(1, 1))
    refused(run("predict", "--model", checkpoint, "--onset", onset, "--apex", apex), 1, onset)


# -- spreadsheets: cells and extent -------------------------------------------------------------
@pytest.mark.parametrize("value", ["9" * 400, 1e300, math.inf, math.nan, "-" + "9" * 30, "1" * 19])
def test_cell_int_refuses_numbers_no_frame_has(value):
    assert cell_int(value) is None


def test_cell_int_still_reads_whole_numbers():
    assert [cell_int(v) for v in (46, 46.0, "46", " 46 ", "+46", "46.00", "9" * 18)] == [46] * 6 + [int("9" * 18)]


def test_a_400_digit_frame_number_is_that_row_unusable(tmp_path):
    root = tmp_path / "c"
    row = {"Subject": 1, "Filename": "EP09_01", "OnsetFrame": "9" * 400, "ApexFrame": 100, "OffsetFrame": 103,
           "Estimated Emotion": "disgust"}
    write_casme2(root, CASME2_CLIPS[:1], extra_rows=[row])
    result = run("scan", "--dataset", "casme2", "--root", root, "--out", tmp_path / "t.csv")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "row 3" in result.output and "[unusable]" in result.output


def test_a_sheet_whose_cells_reach_column_xfd_on_20000_rows_is_refused(tmp_path):
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Sheet1")
    sheet.append(["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"])
    far = [None] * 16383 + ["x"]  # one cell at column XFD on every row
    for _ in range(20_000):
        sheet.append(far)
    path = tmp_path / "far.xlsx"
    book.save(path)
    assert path.stat().st_size < 2_000_000  # a small file
    with pytest.raises(SheetError, match=rf"far\.xlsx, sheet Sheet1: more than {MAX_SHEET_CELLS:,} cells"):
        read_table(path, {"subject": ("Subject",)})


def test_a_utf16_csv_export_is_read(tmp_path):
    text = "Subject,Filename,OnsetFrame\r\n01,EP02_01f,98\r\n"
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode("utf-16"))
    sheet = read_table(path, {"subject": ("Subject",), "onset": ("OnsetFrame",)})
    assert [(r.row, cell_int(r["onset"])) for r in sheet.rows] == [(2, 98)]


def test_a_utf16_csv_without_byte_order_mark_names_the_encoding(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes("Subject,Filename\r\n01,EP02_01f\r\n".encode("utf-16-le"))
    with pytest.raises(SheetError, match="UTF-16"):
        read_table(path, {"subject": ("Subject",)})


# -- readers: the folder named, no ValueError traceback -------------------------------------------
def test_a_subject_folder_sub12345_is_named(tmp_path):
    root = tmp_path / "c"
    write_casme2(root, CASME2_CLIPS[:1])
    subject = next(root.rglob("sub01"))
    shutil.copytree(subject, subject.parent / "sub12345")
    refused(run("scan", "--dataset", "casme2", "--root", root, "--out", tmp_path / "t.csv"), 1, "sub12345")


def test_a_smic_clip_without_a_subject_is_that_clip_unusable(tmp_path):
    root = tmp_path / "s"
    write_smic(root, SMIC_CLIPS[:2])
    clip = next(p for p in root.rglob("s1_ne_01") if "HS" in p.parts)
    shutil.copytree(clip, clip.parent / "foo_po_01")
    result = run("scan", "--dataset", "smic", "--root", root, "--out", tmp_path / "t.csv")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "foo_po_01" in result.output and "[unusable]" in result.output
    assert "2 ok" in result.output


def test_the_select_grid_of_the_docs_still_reads(tmp_path):
    from fr_mer.selection_grid import read_select_file

    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"recipe": {"lr": [0.001, 0.0005]}}))
    model = create_model("ststnet")
    assert read_select_file(grid, "ststnet", model.recipe, {})
