"""Label spaces (composite, CAS(ME)^3 4 and 7 classes, MEGC2018 objective classes) and the
cross-database protocols (lodo, megc2018-cde, megc2018-hde), the single-database loso default."""
import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.data import sample_labels, select_protocol
from fr_mer.errors import ParameterError
from fr_mer.evaluation import EvalConfig, load_plan_data, plan_folds
from fr_mer.models import model_class
from fr_mer.pipeline.cache import read_cache
from fr_mer.pipeline.composite import OFFICIAL_COUNTS, read_composite_list
from fr_mer.pipeline.labels import (
    CASME3_4_SPACE,
    CASME3_7_SPACE,
    COMPOSITE_SPACE,
    OBJECTIVE_SPACE,
)
from fr_mer.protocols import database_folds, fold_leak, protocol_folds
from fr_mer.run_plan import make_plan, resolve_label_space

from .cachefactory import small_composite, small_megc2018, write_flow_cache

FAST = model_class("ststnet").recipe.replace(epochs=2, batch_size=16, lr=1e-2)


# -- label spaces ----------------------------------------------------------------------

def test_casme3_class_protocols_follow_the_spec():
    three = {e: COMPOSITE_SPACE.emotions["casme3"].get(e) for e in
             ("disgust", "fear", "anger", "sad", "happy", "surprise", "others")}
    assert three == {"disgust": "negative", "fear": "negative", "anger": "negative", "sad": "negative",
                     "happy": "positive", "surprise": "surprise", "others": None}
    assert CASME3_4_SPACE.classes == ("negative", "positive", "surprise", "others")
    assert CASME3_4_SPACE.label("casme3", "Others", None) == 3
    assert CASME3_4_SPACE.label("casme3", "sad", None) == 0
    assert CASME3_4_SPACE.label("casme2", "happiness", None) == -1  # another database's emotions
    assert set(CASME3_7_SPACE.classes) == {"disgust", "surprise", "fear", "anger", "sad", "happy", "others"}
    assert [CASME3_7_SPACE.label("casme3", e, None) for e in CASME3_7_SPACE.classes] == list(range(7))
    assert resolve_label_space("loso", "casme3", 3) is COMPOSITE_SPACE
    assert resolve_label_space("loso", "casme3", 7) is CASME3_7_SPACE


def test_objective_space_keeps_classes_1_to_5():
    assert OBJECTIVE_SPACE.classes == ("1", "2", "3", "4", "5")
    assert [OBJECTIVE_SPACE.label("samm", "anger", c) for c in (1, 2, 3, 4, 5, 6, 7, None)] == \
        [0, 1, 2, 3, 4, -1, -1, -1]
    assert resolve_label_space("megc2018-cde", None, None) is OBJECTIVE_SPACE
    with pytest.raises(ParameterError, match="--classes"):
        resolve_label_space("megc2018-hde", None, 4)
    with pytest.raises(ParameterError, match="not a class protocol of --database samm"):
        resolve_label_space("loso", "samm", 7)


def test_label_space_record_holds_the_mapping():
    record = CASME3_4_SPACE.record()
    assert record["name"] == "casme3-4" and record["classes"][-1] == "others"
    assert record["emotions"]["casme3"]["others"] == "others"
    assert OBJECTIVE_SPACE.record()["objective_classes"] == {str(c): str(c) for c in range(1, 6)}


# -- folds -----------------------------------------------------------------------------

def test_lodo_has_three_folds_of_whole_databases():
    entries = read_composite_list()
    databases = np.array([e.dataset for e in entries])
    subjects = np.array([e.subject for e in entries])
    folds = protocol_folds("lodo", databases, subjects)
    assert [f.database for f in folds] == ["casme2", "samm", "smic"]
    assert {f.database: len(f.test_index) for f in folds} == OFFICIAL_COUNTS
    for fold in folds:
        assert fold_leak(fold, databases, subjects) is None
        assert set(databases[fold.train_index]) == {"casme2", "samm", "smic"} - {fold.database}
        assert len(fold.train_index) + len(fold.test_index) == 442


def test_fold_leak_names_a_database_on_both_sides():
    databases = np.array(["casme2", "casme2", "samm"])
    subjects = np.array(["sub01", "sub02", "006"])
    (fold, _) = database_folds(databases)
    leaky = type(fold)(fold.database, fold.name, np.array([0]), np.array([1, 2]))
    assert "casme2" in fold_leak(leaky, databases, subjects)
    with pytest.raises(ParameterError, match="two databases"):
        database_folds(databases[:2])


def test_megc2018_selection_drops_classes_6_and_7_and_smic(tmp_path):
    cache = read_cache(small_megc2018(tmp_path))
    labels = sample_labels(cache, OBJECTIVE_SPACE)
    rows, missing = select_protocol(cache, "megc2018-cde", labels=labels)
    assert not missing
    kept = [cache.keys[i] for i in rows]
    assert len(kept) == 2 * 2 * 5  # 2 databases x 2 subjects x classes 1-5
    assert not any(k.startswith("smic/") or k.endswith(("_oc6", "_oc7")) for k in kept)
    assert sorted(set(labels[rows].tolist())) == [0, 1, 2, 3, 4]


def test_cde_folds_are_subjects_and_hde_trains_on_no_sample_of_its_test_database(tmp_path):
    cache = small_megc2018(tmp_path)
    for protocol, n_folds in (("megc2018-cde", 4), ("megc2018-hde", 2)):
        plan = make_plan(EvalConfig(model="ststnet", protocol=protocol, recipe=FAST, seeds=(0,)), cache)
        assert plan.label_space is OBJECTIVE_SPACE and plan.options["n_classes"] == 5
        data = load_plan_data(plan, torch.device("cpu"))
        folds = plan_folds(data)
        assert len(folds) == n_folds
        for fold in folds:
            test = {(data.databases[i], data.subjects[i]) for i in fold.test_index}
            train = {(data.databases[i], data.subjects[i]) for i in fold.train_index}
            assert not test & train
            if protocol == "megc2018-hde":
                assert {db for db, _ in test} == {fold.database}
                assert fold.database not in {db for db, _ in train}
                assert {db for db, _ in train} == {"casme2", "samm"} - {fold.database}


def test_hde_needs_both_databases(tmp_path):
    rows = [("casme2", "sub01", f"c{k}", "negative", k) for k in range(1, 6)]
    cache = write_flow_cache(tmp_path / "one.h5", rows)
    plan = make_plan(EvalConfig(model="ststnet", protocol="megc2018-hde", recipe=FAST, seeds=(0,)), cache)
    with pytest.raises(Exception, match="samm"):
        load_plan_data(plan, torch.device("cpu"))


# -- loso on one database ---------------------------------------------------------------

def _casme3_cache(tmp_path):
    emotions = ("disgust", "happy", "surprise", "others", "fear", "anger", "sad")
    three = COMPOSITE_SPACE.emotions["casme3"]
    rows, stored = [], {}
    for s in range(1, 4):
        for k, emotion in enumerate(emotions * 2):
            clip = f"a/{10 * k + 1}"
            label = three.get(emotion, "negative")
            rows.append(("casme3", f"spNO.{s}", clip, label))
            stored[f"casme3/spNO.{s}/{clip}"] = emotion
    # the preprocess writer stores no composite label for a clip the 3 classes drop
    path = write_flow_cache(tmp_path / "casme3.h5", rows, emotions=stored)
    with h5py.File(path, "a") as f:
        emotion = [e.decode() for e in f["samples/emotion"][:]]
        labels = f["samples/label"][:]
        labels[[e == "others" for e in emotion]] = -1
        f["samples/label"][:] = labels
    return path


def test_loso_on_a_single_database_cache_needs_no_database(tmp_path):
    cache = _casme3_cache(tmp_path)
    plan = make_plan(EvalConfig(model="ststnet", protocol="loso", recipe=FAST, seeds=(0,)), cache)
    assert plan.config.database == "casme3" and plan.label_space is COMPOSITE_SPACE
    data = load_plan_data(plan, torch.device("cpu"))
    assert len(data) == 3 * 12  # others dropped
    four = make_plan(EvalConfig(model="ststnet", protocol="loso", classes=4, recipe=FAST, seeds=(0,)), cache)
    assert four.options["n_classes"] == 4 and len(load_plan_data(four, data.device)) == 3 * 14
    seven = make_plan(EvalConfig(model="ststnet", protocol="loso", database="casme3", classes=7, recipe=FAST,
                                 seeds=(0,)), cache)
    assert seven.options["n_classes"] == 7
    assert sorted(set(load_plan_data(seven, data.device).labels.tolist())) == list(range(7))


def test_loso_on_several_databases_lists_them(tmp_path):
    cache, _ = small_composite(tmp_path, subjects_per_db=1, clips_per_class=1)
    with pytest.raises(ParameterError, match="casme2, samm, smic; choose one with --database"):
        make_plan(EvalConfig(model="ststnet", protocol="loso", recipe=FAST, seeds=(0,)), cache)
    result = CliRunner().invoke(main, ["evaluate", "--cache", str(cache), "--protocol", "loso", "--model",
                                       "ststnet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "casme2, samm, smic; choose one with --database" in result.output


def test_n_classes_option_must_match_the_label_space(tmp_path):
    cache = small_megc2018(tmp_path)
    with pytest.raises(ParameterError, match="n_classes=3"):
        make_plan(EvalConfig(model="ststnet", protocol="megc2018-cde", options={"n_classes": 3}, recipe=FAST,
                             seeds=(0,)), cache)


# -- command-line runs -----------------------------------------------------------------

def _evaluate(tmp_path, cache, protocol, *extra):
    out = tmp_path / protocol
    result = CliRunner().invoke(main, ["evaluate", "--cache", str(cache), "--protocol", protocol,
                                       "--model", "ststnet", "--epochs", "2", "--batch-size", "16",
                                       "--lr", "0.01", "--seeds", "2", "--threads", "1", "--out", str(out),
                                       *extra])
    assert result.exit_code == 0, result.output
    return out, result


def test_cli_lodo_run_reports_each_held_out_database_and_resumes(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=2, clips_per_class=2)
    out, result = _evaluate(tmp_path, cache, "lodo", "--composite-list", str(listing))
    assert "6 folds trained" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_folds"] == 3 and metrics["label_space"]["name"] == "composite"
    for scope, n in (("full", 36), ("casme2", 12), ("samm", 12), ("smic", 12)):
        assert metrics[scope]["n"] == n and set(metrics[scope]["per_seed"]) == {"0", "1"}
    assert sorted(p.name for p in (out / "folds" / "seed0").iterdir()) == \
        ["casme2-all.json", "samm-all.json", "smic-all.json"]
    header, first = (out / "predictions.csv").read_text().splitlines()[:2]
    assert header.endswith("p_negative,p_positive,p_surprise")
    assert first.split(",")[1] == "sub01"  # the sample's own subject, not the fold's name
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["label_space"]["classes"] == ["negative", "positive", "surprise"]
    _, again = _evaluate(tmp_path, cache, "lodo", "--composite-list", str(listing))
    assert "0 folds trained, 6 resumed" in again.output


def test_cli_megc2018_cde_run_uses_objective_classes(tmp_path):
    cache = small_megc2018(tmp_path)
    out, _ = _evaluate(tmp_path, cache, "megc2018-cde")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_folds"] == 4 and metrics["full"]["n"] == 20
    assert metrics["label_space"]["classes"] == ["1", "2", "3", "4", "5"]
    assert set(metrics) >= {"casme2", "samm"} and "smic" not in metrics
    assert (out / "predictions.csv").read_text().splitlines()[0].endswith("p_1,p_2,p_3,p_4,p_5")
    assert np.loadtxt(out / "confusion_full.csv", delimiter=",").shape == (5, 5)
    assert json.loads((out / "config.json").read_text())["config"]["options"] == {"n_classes": 5}


def test_cli_refuses_database_with_a_cross_database_protocol(tmp_path):
    cache = small_megc2018(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", "--cache", str(cache), "--protocol", "lodo", "--database",
                                       "samm", "--model", "ststnet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "--database is for --protocol loso" in result.output


def test_train_checkpoint_records_the_class_names(tmp_path):
    from fr_mer.checkpoint import load_checkpoint

    cache = _casme3_cache(tmp_path)
    result = CliRunner().invoke(main, ["train", "--cache", str(cache), "--protocol", "loso", "--classes", "7",
                                       "--model", "ststnet", "--epochs", "1", "--batch-size", "16",
                                       "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    model, info = load_checkpoint(tmp_path / "m.pt")
    assert model.n_classes == 7 and info["classes"] == list(CASME3_7_SPACE.classes)


# -- the objective-class cache column --------------------------------------------------

def test_cache_without_objective_column_reads_as_no_class(tmp_path):
    cache = small_megc2018(tmp_path)
    assert sorted(set(read_cache(cache).meta["objective_class"])) == [-1, 1, 2, 3, 4, 5, 6, 7]
    with h5py.File(cache, "a") as f:
        del f["samples/objective_class"]
    assert set(read_cache(cache).meta["objective_class"]) == {-1}
