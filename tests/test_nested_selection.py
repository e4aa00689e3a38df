"""``fr-mer evaluate --select FILE``: nested selection on the training subjects only (fr_mer.selection)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fr_mer.evaluation as evaluation
import fr_mer.selection as selection
from fr_mer.cli import main
from fr_mer.data import DeviceDataset
from fr_mer.evaluation import EvalConfig, EvaluationError, load_plan_data, plan_folds, run_evaluation, train_chunk
from fr_mer.models import model_class
from fr_mer.run_plan import make_plan
from fr_mer.selection import inner_splits
from fr_mer.selection_grid import MAX_CANDIDATES, SelectionError, SelectionGrid, read_select_file
from tests.cachefactory import small_composite

BASE = model_class("ststnet").recipe.replace(epochs=20, batch_size=16, lr=1e-2)
#: lr 1e-7 leaves the network at its initialisation; lr 1e-2 learns the separable flows.
GRID = SelectionGrid(recipe={"lr": [1e-7, 1e-2]}, inner_folds=2)
TIMINGS = {"seconds", "samples_per_second"}


def config_for(listing, grid=GRID, **kwargs):
    return EvalConfig(model="ststnet", recipe=BASE, seeds=(0,), composite_list=str(listing), select=grid, **kwargs)


class DataAccess:
    """Every ``DeviceDataset.batch`` call: (phase, fit, rows), phase set by the training or prediction around it."""

    def __init__(self, monkeypatch):
        self.events = []
        self.phase = self.fit = None
        self.fits = 0
        batch = DeviceDataset.batch

        def logged_batch(data, index):
            self.events.append((self.phase, self.fit, set(index.cpu().tolist())))
            return batch(data, index)

        monkeypatch.setattr(DeviceDataset, "batch", logged_batch)
        for module, prefix in ((selection, "inner"), (evaluation, "final")):
            monkeypatch.setattr(module, "train_model", self.wrap(module.train_model, f"{prefix}-train", True))
            monkeypatch.setattr(module, "predict_proba", self.wrap(module.predict_proba, f"{prefix}-predict", False))

    def wrap(self, function, phase, training):
        def wrapped(model, *args, **kwargs):
            if training:
                self.fits += 1
                model.probe_fit = self.fits
            self.phase, self.fit = phase, getattr(model, "probe_fit", None)
            try:
                return function(model, *args, **kwargs)
            finally:
                self.phase = self.fit = None
        return wrapped

    def fold_done(self, result, resumed):
        self.events.append(("fold-done", None, set()))

    def per_fold(self):
        segments, current = [], []
        for event in self.events:
            if event[0] == "fold-done":
                segments.append(current)
                current = []
            else:
                current.append(event)
        return segments


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory):
    """A one-seed composite of 6 subjects, selected fold by fold, every data access logged."""
    folder = tmp_path_factory.mktemp("select")
    cache, listing = small_composite(folder, subjects_per_db=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            access = DataAccess(monkeypatch)
            metrics = run_evaluation(cache, folder / "out", config_for(listing), device=torch.device("cpu"),
                                     on_fold=access.fold_done)
    finally:
        torch.set_num_threads(threads)
    data = load_plan_data(make_plan(config_for(listing), cache), torch.device("cpu"))
    return cache, listing, folder / "out", metrics, access, plan_folds(data)


def test_held_out_subject_is_read_only_by_the_final_prediction(selected_run):
    *_, access, folds = selected_run
    segments = access.per_fold()
    assert len(segments) == len(folds) == 6
    for fold, events in zip(folds, segments):
        held_out, training = set(fold.test_index.tolist()), set(fold.train_index.tolist())
        assert all(phase is not None for phase, _, _ in events)
        touching = [i for i, (_, _, rows) in enumerate(events) if rows & held_out]
        assert touching and all(events[i][0] == "final-predict" for i in touching), fold.subject
        last_training = max(i for i, (phase, _, _) in enumerate(events) if phase.endswith("train"))
        assert min(touching) > last_training  # after the last training step of the fold, inner fits included
        final_trained = set().union(*(rows for phase, _, rows in events if phase == "final-train"))
        assert final_trained == training  # the chosen candidate is retrained on every training subject


def test_inner_validation_rows_are_never_trained_on_by_their_fit(selected_run):
    *_, access, folds = selected_run
    for fold, events in zip(folds, access.per_fold()):
        training = set(fold.train_index.tolist())
        trained, predicted = {}, {}
        for phase, fit, rows in events:
            if phase == "inner-train":
                trained.setdefault(fit, set()).update(rows)
            elif phase == "inner-predict":
                predicted.setdefault(fit, set()).update(rows)
        assert len(predicted) == len(GRID.recipe["lr"]) * GRID.inner_folds
        for fit, rows in predicted.items():
            assert rows <= training and not rows & trained[fit], (fold.subject, fit)
            assert trained[fit] | rows == training  # an inner fold's two sides are the fold's training rows
        # the fits run candidate by candidate: each candidate validates every training row once
        fits = sorted(predicted)
        for first, second in zip(fits[::2], fits[1::2]):
            assert not predicted[first] & predicted[second] and predicted[first] | predicted[second] == training


def test_the_working_learning_rate_is_chosen_and_recorded(selected_run):
    cache, listing, out, metrics, _, folds = selected_run
    records = [json.loads(p.read_text()) for p in sorted((out / "folds" / "seed0").glob("*.json"))]
    assert len(records) == len(folds)
    for record in records:
        chosen = record["selection"]
        assert chosen["chosen"] == 1 and chosen["candidate"] == {"recipe": {"lr": 0.01}, "options": {}}
        assert chosen["inner_folds"] == 2 and chosen["inner_uf1"][1] > chosen["inner_uf1"][0]
    recorded = metrics["selection"]
    assert [c["chosen"] for c in recorded["candidates"]] == [0, len(folds)]
    assert recorded["fits_per_fold"] == 2 * 2 + 1
    assert {(f["database"], f["subject"]) for f in recorded["folds"]} == {(f.database, f.name) for f in folds}
    assert json.loads((out / "metrics.json").read_text())["selection"] == recorded
    assert json.loads((out / "config.json").read_text())["config"]["select"] == {
        "recipe": {"lr": [1e-7, 1e-2]}, "options": {}, "inner_folds": 2}
    summary = (out / "summary.md").read_text()
    assert "Nested selection: 2 candidates" in summary and "| 1 | lr=0.01 | 6 |" in summary
    assert metrics["full"]["uf1"] > 0.9


def test_resume_reads_finished_folds_without_selecting_them_again(selected_run, tmp_path, monkeypatch):
    cache, listing, out, metrics, _, folds = selected_run
    run = tmp_path / "run"
    (run / "folds" / "seed0").mkdir(parents=True)
    (run / "config.json").write_bytes((out / "config.json").read_bytes())
    kept = sorted((out / "folds" / "seed0").glob("*.json"))[1:]
    for path in kept:
        (run / "folds" / "seed0" / path.name).write_bytes(path.read_bytes())
    scored = []
    score = selection.score_candidates
    monkeypatch.setattr(selection, "score_candidates", lambda plan, data, jobs: scored.append(
        [job.fold.name for job in jobs]) or score(plan, data, jobs))
    torch.set_num_threads(1)
    resumed = run_evaluation(cache, run, config_for(listing), device=torch.device("cpu"))
    assert scored == [[folds[0].name]]
    assert resumed["selection"] == metrics["selection"] and resumed["full"] == metrics["full"]
    with pytest.raises(EvaluationError, match=r"other settings \(select\)"):
        run_evaluation(cache, run, config_for(listing, SelectionGrid(recipe={"lr": [1e-2]}, inner_folds=2)),
                       device=torch.device("cpu"))


def test_the_cluster_task_selects_as_the_local_run(selected_run, tmp_path, one_torch_thread):
    cache, listing, out, *_ = selected_run
    plan = make_plan(config_for(listing), cache)
    job = plan.jobs(plan_folds(load_plan_data(plan, torch.device("cpu"))))[2]
    assert train_chunk([job], plan, tmp_path, "cpu") == [True]
    name = f"{job.fold.database}-{job.fold.name}.json"

    def without_timings(record):
        return {k: v for k, v in record.items() if k not in TIMINGS} | {
            "selection": {k: v for k, v in record["selection"].items() if k != "seconds"}}

    worker = json.loads((tmp_path / "folds" / "seed0" / name).read_text())
    assert without_timings(worker) == without_timings(json.loads((out / "folds" / "seed0" / name).read_text()))


def test_stacked_folds_select_the_same_candidates(selected_run, tmp_path, one_torch_thread):
    cache, listing, out, metrics, *_ = selected_run
    stacked = run_evaluation(cache, tmp_path / "stacked", config_for(listing, fold_batch=0),
                             device=torch.device("cpu"))
    assert [f["chosen"] for f in stacked["selection"]["folds"]] == [f["chosen"] for f in metrics["selection"]["folds"]]
    assert stacked["full"]["uf1"] > 0.9


def test_a_tie_keeps_the_earlier_candidate(tmp_path, one_torch_thread):
    # Adam ignores the momentum: both candidates train identically and score the same.
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    grid = SelectionGrid(recipe={"momentum": [0.5, 0.9]}, inner_folds=2)
    plan = make_plan(EvalConfig(model="ststnet", recipe=BASE.replace(epochs=2), seeds=(0,),
                                composite_list=str(listing), select=grid), cache)
    data = load_plan_data(plan, torch.device("cpu"))
    [chosen] = selection.score_candidates(plan, data, plan.jobs(plan_folds(data))[:1])
    assert chosen.inner_uf1[0] == chosen.inner_uf1[1] and chosen.chosen == 0


def test_inner_folds_split_the_training_subjects_only(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=3)
    plan = make_plan(config_for(listing, SelectionGrid(recipe={"lr": [1e-2]}, inner_folds=3)), cache)
    data = load_plan_data(plan, torch.device("cpu"))
    job = plan.jobs(plan_folds(data))[4]
    splits = inner_splits(data, job, 3)
    assert len(splits) == 3
    subject = np.array([f"{d}/{s}" for d, s in zip(data.databases, data.subjects)])
    validated = np.concatenate([val for _, val in splits])
    assert sorted(validated.tolist()) == sorted(job.fold.train_index.tolist())  # each training row once
    for train, val in splits:
        assert not set(subject[train]) & set(subject[val])  # grouped by subject
        assert sorted(np.concatenate([train, val]).tolist()) == sorted(job.fold.train_index.tolist())
    again = inner_splits(data, job, 3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))  # from the fold seed: repeatable
    with pytest.raises(SelectionError, match="8 training subjects, fewer than the select file's inner_folds"):
        inner_splits(data, job, 9)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON file"),
    ('{"recipe": {"epoch": [1, 2]}}', "no recipe setting.*epoch"),
    ('{"recipe": {"lr": []}}', r"recipe\.lr: an empty list"),
    ('{"recipe": {"lr": [0.1, 0.1]}}', r"recipe\.lr: a value is repeated"),
    ('{"recipe": {"lr": [0.1, -1]}}', r"recipe\.lr\[1\].*lr.*must be a finite number > 0"),
    ('{"recipe": {"epochs": [1, "many"]}}', r"recipe\.epochs\[1\]"),
    ('{"options": {"dropout": [0.5, "half"]}}', r"options\.dropout\[1\]"),
    ('{"options": {"width": [1, 2]}}', r"options\.width\[0\].*no option"),
    ('{"options": {"n_classes": [3]}}', r"options\.n_classes"),
    ('{}', "the grid is empty"),
    ('{"recipe": {"lr": [1, 2]}, "inner_folds": 1}', "inner_folds: must be an integer of at least 2"),
    ('{"recipe": {"lr": [1, 2]}, "folds": 3}', "folds: unknown setting"),
    (json.dumps({"recipe": {"epochs": list(range(1, 10)), "lr": [1e-3, 1e-2, 1e-1], "batch_size": [8, 16, 32]}}),
     f"81 candidates.*more than {MAX_CANDIDATES}"),
])
def test_a_bad_select_file_names_the_file_and_the_key(tmp_path, content, message):
    path = tmp_path / "grid.json"
    path.write_text(content)
    with pytest.raises(SelectionError, match=message) as error:
        read_select_file(path, "ststnet", BASE, {})
    assert str(path) in str(error.value)


def test_cli_select_refuses_a_bad_file_before_any_work(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    path = tmp_path / "grid.json"
    path.write_text('{"options": {"dropout": [0.5, "half"]}, "inner_folds": 2}')
    result = CliRunner().invoke(main, ["evaluate", "--cache", str(cache), "--model", "ststnet", "--composite-list",
                                       str(listing), "--select", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and str(path) in result.output and "options.dropout" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "config.json").exists()
    with pytest.raises(ValueError, match="--weights trains nothing"):
        EvalConfig(model="ststnet", weights_dir=str(tmp_path), select=GRID)


def test_the_documented_select_file_is_valid():
    path = Path(__file__).resolve().parent.parent / "docs" / "select-ststnet.json"
    grid = read_select_file(path, "ststnet", model_class("ststnet").recipe, {})
    assert grid.size == 8 and grid.inner_folds == 3


def test_stacked_inner_fits_score_as_fold_by_fold_through_the_generic_stack(tmp_path, one_torch_thread):
    cache, listing = small_composite(tmp_path, subjects_per_db=2)
    grid = SelectionGrid(recipe={"lr": [1e-3, 1e-2]}, inner_folds=2)
    scores = []
    for fold_batch in (1, 0):
        config = EvalConfig(model="off_apexnet", options={"hidden": 16}, recipe=BASE.replace(epochs=10), seeds=(0,),
                            composite_list=str(listing), select=grid, fold_batch=fold_batch)
        plan = make_plan(config, cache)
        data = load_plan_data(plan, torch.device("cpu"))
        scores.append([s.inner_uf1 for s in selection.score_candidates(plan, data, plan.jobs(plan_folds(data))[:2])])
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
