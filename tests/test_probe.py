"""`fr-mer probe`: the linear probe against scikit-learn run directly, in evaluate's reports."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, recall_score
from sklearn.preprocessing import StandardScaler

from fr_mer.cli import main
from fr_mer.errors import ParameterError
from fr_mer.pipeline.cache import read_cache
from fr_mer.pipeline.labels import CLASSES
from fr_mer.probe import ProbeConfig
from tests.cachefactory import small_composite, write_flow_cache


def sklearn_loso(features, labels, subjects, C):
    """Leave-one-subject-out predictions computed here, independently of fr_mer.probe."""
    pred = np.empty_like(labels)
    for subject in np.unique(subjects):
        test = subjects == subject
        scaler = StandardScaler().fit(features[~test])
        classifier = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
        classifier.fit(scaler.transform(features[~test]), labels[~test])
        pred[test] = classifier.predict(scaler.transform(features[test]))
    return pred


def read_predictions(path):
    with open(path, newline="") as handle:
        return {row["sample"]: row for row in csv.DictReader(handle)}


def test_probe_matches_scikit_learn_on_a_tiny_cache(tmp_path):
    rows = [("casme2", f"sub{s + 1:02d}", f"EP{s:02d}_{label[:2]}_{k}", label)
            for s in range(6) for label in CLASSES for k in range(2)]
    cache = write_flow_cache(tmp_path / "tiny.h5", rows, separable=False, size=4, seed=3)
    out = tmp_path / "probe"
    result = CliRunner().invoke(main, ["probe", "--cache", str(cache), "--protocol", "loso", "--database",
                                       "casme2", "--channels", "u,v", "--C", "0.3", "--out", str(out)])
    assert result.exit_code == 0, result.output

    stored = read_cache(cache, arrays=["flow"])
    keys, flow = list(stored.keys), np.asarray(stored.arrays["flow"])
    labels = np.asarray(stored.meta["label"])
    subjects = np.asarray(stored.meta["subject"])
    expected = sklearn_loso(flow[:, :2].reshape(len(keys), -1), labels, subjects, C=0.3)

    predictions = read_predictions(out / "predictions.csv")
    got = np.asarray([CLASSES.index(predictions[k]["predicted"]) for k in keys])
    np.testing.assert_array_equal(got, expected)
    assert {predictions[k]["true"] for k in keys} == set(CLASSES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "probe" and metrics["n_folds"] == 6 and metrics["n_samples"] == 36
    assert metrics["recipe"]["channels"] == ["u", "v"] and metrics["recipe"]["C"] == 0.3
    assert metrics["full"]["uf1"] == pytest.approx(f1_score(labels, expected, average="macro"), abs=1e-4)
    assert metrics["full"]["uar"] == pytest.approx(recall_score(labels, expected, average="macro"), abs=1e-4)
    assert (out / "summary.md").is_file() and (out / "folds.csv").is_file()
    assert json.loads((out / "config.json").read_text())["probe"]["protocol"] == "loso"


def test_probe_decodes_a_separable_composite_perfectly(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=2, clips_per_class=2)
    out = tmp_path / "probe"
    result = CliRunner().invoke(main, ["probe", "--cache", str(cache), "--composite-list", str(listing),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_folds"] == 6 and metrics["full"]["uf1"] == 1.0
    assert set(metrics) >= {"casme2", "samm", "smic"}


@pytest.mark.parametrize("changes, message", [
    ({"channels": ("u", "w")}, "--channels"),
    ({"channels": ()}, "--channels"),
    ({"C": 0.0}, "--C"),
    ({"protocol": "composite", "database": "casme2"}, "--database is for --protocol loso"),
    ({"protocol": "loso", "database": "smic", "classes": 5}, "--classes 5 is not a class protocol"),
    ({"protocol": "loso", "classes": 6}, "--classes must be one of"),
])
def test_probe_settings_are_checked(changes, message):
    with pytest.raises(ParameterError, match=message):
        ProbeConfig(**changes)


def test_probe_command_refuses_bad_options_with_one_line(tmp_path):
    cache = write_flow_cache(tmp_path / "c.h5", [("casme2", "sub01", "EP01", "negative")])
    result = CliRunner().invoke(main, ["probe", "--cache", str(cache), "--channels", "u,x", "--out",
                                       str(tmp_path / "o")])
    assert result.exit_code == 1 and "--channels" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["probe", "--cache", str(cache), "--protocol", "composite", "--database",
                                       "casme2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "--database is for --protocol loso" in result.output


def test_a_probe_fitted_in_workers_leaves_scikit_learn_to_them(tmp_path):
    """With --jobs 2 this process only reads the folds back: importing scikit-learn here (1.2 s of CPU)
    would come before the workers' first fold and after their last, every run."""
    cache, listing = small_composite(tmp_path, subjects_per_db=2, clips_per_class=1)
    code = ("import sys; from fr_mer.probe import ProbeConfig, run_probe; "
            f"metrics = run_probe({str(cache)!r}, {str(tmp_path / 'probe')!r}, "
            f"ProbeConfig(composite_list={str(listing)!r}), jobs=2); "
            "print('sklearn' in sys.modules, metrics['full']['uf1'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded, uf1 = done.stdout.split()
    assert loaded == "False"
    assert 0 <= float(uf1) <= 1
    with pytest.raises(ParameterError, match="C"):
        ProbeConfig(C=0)  # still checked when the config is made
    with pytest.raises(ParameterError, match="class weight"):
        ProbeConfig(class_weight="equal")
