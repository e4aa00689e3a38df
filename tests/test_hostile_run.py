"""Hostile inputs to train, evaluate, import-ststnet and demo (issue 17, items 4-6).

Each case asserts the exit status (1 for a bad input, 2 for a usage error), that
the message names the file or option, that no Python traceback is printed, and,
where a run had finished folds, that none of them is lost.
"""
import json
import os
import shutil

import pytest
import torch

from fr_mer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fr_mer.models import create_model, model_class
from tests.cachefactory import small_composite
from tests.cli import run, refused


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    return small_composite(tmp_path_factory.mktemp("hostile"), subjects_per_db=1)


def evaluate_args(composite, out, *extra):
    cache, listing = composite
    return ("evaluate", "--cache", cache, "--model", "ststnet", "--composite-list", listing, "--seeds", 1,
            "--epochs", 1, "--batch-size", 16, "--out", out, *extra)


def train_args(composite, out, *extra):
    cache, listing = composite
    return ("train", "--cache", cache, "--model", "ststnet", "--composite-list", listing, "--epochs", 1,
            "--batch-size", 16, "--out", out, *extra)


# -- options refused before any work ----------------------------------------------------------
@pytest.mark.parametrize("option, value, status", [
    ("--epochs", 0, 1), ("--epochs", -2, 1), ("--batch-size", 0, 1), ("--batch-size", -8, 1),
    ("--batch-size", 1, 1), ("--lr", 0, 1), ("--threads", -1, 2), ("--threads", 0, 2), ("--device", "tpu", 1),
    ("--device", "cuda:x", 1), ("--first-seed", -1, 2), ("--seeds", 0, 2), ("--fold-batch", -1, 2),
    ("--val-fraction", 1.5, 2),
])
def test_evaluate_refuses_an_option_out_of_range(composite, tmp_path, option, value, status):
    result = run(*evaluate_args(composite, tmp_path / "out"), option, value)
    refused(result, status, option)
    assert not (tmp_path / "out").exists()  # refused before the results folder is made


@pytest.mark.parametrize("option, value, status", [
    ("--epochs", 0, 1), ("--epochs", -1, 1), ("--batch-size", 0, 1), ("--threads", -1, 2),
    ("--device", "tpu", 1), ("--seed", -1, 2),
])
def test_train_refuses_an_option_out_of_range_and_writes_nothing(composite, tmp_path, option, value, status):
    out = tmp_path / "model.pt"
    refused(run(*train_args(composite, out), option, value), status, option)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pair, named", [
    ("dropuot=0.1", "dropuot"), ("dropout=half", "dropout"), ("dropout=1.5", "dropout"), ("novalue", "--option"),
])
def test_bad_model_options_are_refused(composite, tmp_path, pair, named):
    result = run(*evaluate_args(composite, tmp_path / "out"), "-o", pair)
    refused(result, 2 if named == "--option" else 1, named)


def test_loso_without_a_database_is_a_usage_error(composite, tmp_path):
    refused(run(*evaluate_args(composite, tmp_path / "out"), "--protocol", "loso"), 2, "--database")


def test_demo_jobs_zero_is_refused_before_any_work(tmp_path):
    result = run("demo", "--out", tmp_path / "demo", "--jobs", 0)
    refused(result, 2, "--jobs")
    assert not (tmp_path / "demo").exists()


def test_demo_device_is_checked_before_any_work(tmp_path):
    refused(run("demo", "--out", tmp_path / "demo", "--device", "tpu"), 1, "--device")
    assert not (tmp_path / "demo").exists()


# -- --out that cannot be written ------------------------------------------------------------
def test_evaluate_out_that_is_a_file(composite, tmp_path):
    target = tmp_path / "results"
    target.write_text("not a folder")
    refused(run(*evaluate_args(composite, target)), 2, "--out", target)
    assert target.read_text() == "not a folder"


def test_train_out_that_is_a_folder_is_refused_before_training(composite, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    refused(run(*train_args(composite, folder)), 2, "--out", folder)
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []  # no models.tmp


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_out_in_a_read_only_folder(composite, tmp_path, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        args = evaluate_args if command == "evaluate" else train_args
        refused(run(*args(composite, locked / "out")), 2, "--out", locked)
    finally:
        locked.chmod(0o700)


def test_out_under_a_file_is_refused(composite, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(run(*train_args(composite, blocker / "model.pt")), 2, "--out", blocker)
    refused(run(*evaluate_args(composite, blocker / "out")), 2, "--out", blocker)


# -- inputs that are not what they claim ------------------------------------------------------
def test_import_ststnet_labels_that_is_a_folder(tmp_path):
    (tmp_path / "images").mkdir()
    refused(run("import-ststnet", "--images", tmp_path / "images", "--labels", tmp_path, "--out",
                tmp_path / "c.h5"), 2, "--labels")
    assert not (tmp_path / "c.h5").exists()


def test_import_ststnet_images_missing(tmp_path):
    refused(run("import-ststnet", "--images", tmp_path / "none", "--out", tmp_path / "c.h5"), 1, "--images")


def test_cache_that_is_a_folder_or_missing(composite, tmp_path):
    _, listing = composite
    for cache in (tmp_path, tmp_path / "missing.h5"):
        result = run("evaluate", "--cache", cache, "--model", "ststnet", "--composite-list", listing,
                     "--out", tmp_path / "out")
        refused(result, 1, cache)


def test_checkpoint_whose_weights_do_not_fit_its_model(tmp_path):
    model = create_model("ststnet")
    path = save_checkpoint(tmp_path / "m.pt", model, fold=None, seed=0, recipe=model.recipe)
    payload = torch.load(path, weights_only=True)
    payload["model"] = "off_apexnet"
    torch.save(payload, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match="renamed.pt.*does not fit model 'off_apexnet'"):
        load_checkpoint(tmp_path / "renamed.pt")
    del payload["model"]
    torch.save(payload, tmp_path / "nameless.pt")
    with pytest.raises(CheckpointError, match=r"nameless.pt.*no model"):
        load_checkpoint(tmp_path / "nameless.pt")
    payload = torch.load(path, weights_only=True)
    payload["options"] = json.dumps({"dropout": "lots"})
    torch.save(payload, tmp_path / "options.pt")
    with pytest.raises(CheckpointError, match="options.pt.*dropout"):
        load_checkpoint(tmp_path / "options.pt")
    (tmp_path / "torn.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="torn.pt"):
        load_checkpoint(tmp_path / "torn.pt")


def test_released_weights_of_another_model(composite, tmp_path):
    cache, listing = composite
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("sub01", "006", "s01"):
        torch.save(create_model("off_apexnet").state_dict(), weights / f"{name}.pth")
    result = run("evaluate", "--cache", cache, "--model", "ststnet", "--weights", weights, "--composite-list",
                 listing, "--out", tmp_path / "out")
    refused(result, 1, "sub01.pth", "does not fit model 'ststnet'")


# -- damaged results folders -----------------------------------------------------------------
@pytest.fixture()
def finished_run(composite, tmp_path):
    out = tmp_path / "out"
    result = run(*evaluate_args(composite, out))
    assert result.exit_code == 0, result.output
    return out


def folds_of(out):
    return sorted((out / "folds").rglob("*.json"))


@pytest.mark.parametrize("damage", ["{\"seed\": 0, \"subj", "[1, 2]", "{\"seed\": \"zero\"}", "\xff\xfe"])
def test_a_damaged_fold_file_is_named_with_how_to_resume(composite, finished_run, damage):
    damaged = folds_of(finished_run)[1]
    damaged.write_text(damage, encoding="latin-1")
    others = {p: p.read_text() for p in folds_of(finished_run) if p != damaged}
    result = run(*evaluate_args(composite, finished_run))
    refused(result, 1, damaged, "delete")
    assert {p: p.read_text() for p in others} == others  # no finished fold lost
    damaged.unlink()
    again = run(*evaluate_args(composite, finished_run))
    assert again.exit_code == 0 and "1 folds trained, 2 resumed" in again.output, again.output


@pytest.mark.parametrize("damage", ["{\"config\": {\"model\": ", "[]", "{\"config\": {\"model\": 3}}",
                                    "{\"config\": {\"model\": \"ststnet\", \"seeds\": \"two\"}}"])
def test_a_damaged_config_file_is_named_with_how_to_resume(composite, finished_run, damage):
    config = finished_run / "config.json"
    config.write_text(damage)
    before = {p: p.read_text() for p in folds_of(finished_run)}
    result = run(*evaluate_args(composite, finished_run))
    refused(result, 1, config, "fresh --out")
    assert {p: p.read_text() for p in folds_of(finished_run)} == before


def test_resume_with_other_settings_names_them(composite, finished_run):
    result = run(*evaluate_args(composite, finished_run), "--lr", 0.5)
    refused(result, 1, "recipe", "--overwrite")
    assert len(folds_of(finished_run)) == 3


def test_resume_with_the_composite_list_by_a_relative_path(composite, finished_run, monkeypatch):
    cache, listing = composite
    monkeypatch.chdir(listing.parent)
    result = run("evaluate", "--cache", cache, "--model", "ststnet", "--composite-list", listing.name,
                 "--seeds", 1, "--epochs", 1, "--batch-size", 16, "--out", finished_run)
    assert result.exit_code == 0 and "0 folds trained, 3 resumed" in result.output, result.output


def test_resume_with_a_copy_of_the_composite_list_elsewhere_is_another_setting(composite, finished_run, tmp_path):
    cache, listing = composite
    copy = tmp_path / "copy.csv"
    shutil.copy(listing, copy)
    result = run("evaluate", "--cache", cache, "--model", "ststnet", "--composite-list", copy,
                 "--seeds", 1, "--epochs", 1, "--batch-size", 16, "--out", finished_run)
    refused(result, 1, "composite_list")


def test_a_fold_with_a_missing_class_is_a_message(tmp_path):
    from tests.cachefactory import write_flow_cache

    rows = [("casme2", f"sub0{s}", f"c{s}{k}", "negative" if s == 1 else label)
            for s in (1, 2) for k, label in enumerate(("negative", "positive", "surprise"))]
    cache = write_flow_cache(tmp_path / "c.h5", rows)
    result = run("evaluate", "--cache", cache, "--model", "ststnet", "--protocol", "loso", "--database", "casme2",
                 "--seeds", 1, "--epochs", 1, "--batch-size", 2, "--out", tmp_path / "out")
    refused(result, 1, "no sample of class")


def test_recipe_defaults_stay_valid():
    for name in ("fr", "ststnet", "dual_inception", "off_apexnet", "micro_attention", "meranet", "smastn"):
        recipe = model_class(name).recipe
        assert recipe.epochs >= 1 and recipe.batch_size >= 2
