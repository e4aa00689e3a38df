"""What a run records of its machine, resumes across machines, ensembles of seeds, --deterministic."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fr_mer.environment import describe_environment, package_versions
from fr_mer.evaluation import run_evaluation
from fr_mer.metrics import uar, uf1
from fr_mer.models.ststnet import STSTNet
from fr_mer.report import ensemble_predictions
from fr_mer.results_folder import FoldResult
from fr_mer.run_plan import EvalConfig
from tests.cachefactory import small_composite

FAST = STSTNet.recipe.replace(epochs=2, batch_size=16, lr=1e-3)


def _fold(seed, subject, keys, true, proba):
    proba = np.asarray(proba)
    return FoldResult(seed=seed, database="casme2", subject=subject, keys=keys, true=true,
                      pred=proba.argmax(1).tolist(), proba=proba.tolist(), n_train=10, seconds=1.0,
                      train_loss=0.1, samples_per_second=5.0)


def test_ensemble_probabilities_are_the_mean_of_the_members():
    a = [_fold(0, "sub01", ["k1", "k2"], [0, 1], [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]),
         _fold(0, "sub02", ["k3"], [2], [[0.1, 0.1, 0.8]])]
    b = [_fold(1, "sub01", ["k1", "k2"], [0, 1], [[0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]),
         _fold(1, "sub02", ["k3"], [2], [[0.5, 0.1, 0.4]])]
    members = ensemble_predictions(a + b)
    by_subject = {m.subject: m for m in members}
    np.testing.assert_allclose(by_subject["sub01"].proba, [[0.4, 0.5, 0.1], [0.15, 0.35, 0.5]])
    np.testing.assert_allclose(by_subject["sub02"].proba, [[0.3, 0.1, 0.6]])
    # The mean decides, not a vote: sample k1 goes to class 1 although seed 0 said 0.
    assert by_subject["sub01"].pred == [1, 2] and by_subject["sub02"].pred == [2]
    assert {m.seed for m in members} == {-1}


def test_ensemble_of_folds_predicting_different_samples_is_refused():
    a = _fold(0, "sub01", ["k1"], [0], [[0.6, 0.3, 0.1]])
    b = _fold(1, "sub01", ["k9"], [0], [[0.6, 0.3, 0.1]])
    with pytest.raises(ValueError, match="different samples"):
        ensemble_predictions([a, b])


def test_environment_names_versions_cpu_threads_and_device():
    record = describe_environment(torch.device("cpu"))
    assert record["device"] == "cpu"
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["packages"]["torch"] == torch.__version__.split("+")[0] or record["packages"]["torch"]
    assert set(package_versions()) >= {"python", "torch", "numpy", "fr-mer"}
    assert record["cpu"]


def test_metrics_record_the_environment_and_the_ensemble(tmp_path):
    cache, listing = small_composite(tmp_path)
    config = EvalConfig(model="ststnet", recipe=FAST, seeds=(0, 1), composite_list=str(listing))
    out = tmp_path / "out"
    metrics = run_evaluation(cache, out, config, device=torch.device("cpu"), ensemble=True)
    env = metrics["environment"]
    assert env["device"] == "cpu" and env["torch_threads"] == torch.get_num_threads()
    assert env["folds_ran_on"] == [{"device": "cpu", "torch_threads": torch.get_num_threads(), "folds": 18}]
    # The ensemble's figures against an independent computation from predictions.csv.
    rows = [line.split(",") for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    classes = ["negative", "positive", "surprise"]
    proba: dict[str, list[np.ndarray]] = {}
    true: dict[str, int] = {}
    for row in rows:
        proba.setdefault(row[0], []).append(np.array([float(x) for x in row[6:9]]))
        true[row[0]] = classes.index(row[3])
    keys = sorted(proba)
    t = [true[k] for k in keys]
    p = [int(np.mean(proba[k], axis=0).argmax()) for k in keys]
    assert metrics["ensemble"]["full"]["uf1"] == pytest.approx(uf1(t, p), abs=2e-3)
    assert metrics["ensemble"]["full"]["uar"] == pytest.approx(uar(t, p), abs=2e-3)
    assert metrics["ensemble"]["seeds"] == [0, 1]
    assert (out / "ensemble_predictions.csv").is_file()
    assert "Ensemble of seeds [0, 1]" in (out / "summary.md").read_text()
    fold_file = next((out / "folds" / "seed0").glob("*.json"))
    assert json.loads(fold_file.read_text())["device"] == "cpu"


def test_a_run_resumed_on_another_device_says_so(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=2)
    config = EvalConfig(model="ststnet", recipe=FAST, seeds=(0,), composite_list=str(listing))
    out = tmp_path / "out"
    run_evaluation(cache, out, config, device=torch.device("cpu"))
    fold_file = sorted((out / "folds" / "seed0").glob("*.json"))[0]
    record = json.loads(fold_file.read_text())
    record.update(device="cuda:0 (a GPU elsewhere)", torch_threads=16)
    fold_file.write_text(json.dumps(record))
    metrics = run_evaluation(cache, out, config, device=torch.device("cpu"))
    machines = {(m["device"], m["torch_threads"]): m["folds"] for m in metrics["environment"]["folds_ran_on"]}
    assert machines[("cuda:0 (a GPU elsewhere)", 16)] == 1
    assert "more than one device or thread count" in (out / "summary.md").read_text()


def test_deterministic_flag_turns_on_torchs_deterministic_algorithms():
    # In a subprocess: the setting is global to torch.
    code = ("from click.testing import CliRunner\n"
            "from fr_mer.commands.common import resolve_training\n"
            "import torch, os\n"
            "resolve_training('ststnet', (), None, None, None, 'cpu', None, True)\n"
            "print(torch.are_deterministic_algorithms_enabled(), os.environ['CUBLAS_WORKSPACE_CONFIG'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", ":4096:8"]
