"""The whole path on a tiny synthetic composite: synth -> scan -> preprocess -> evaluate -> train -> predict."""
import json

import pytest
import torch
from click.testing import CliRunner

from fr_mer.checkpoint import load_checkpoint
from fr_mer.cli import main
from fr_mer.demo import DemoSettings, run_demo
from fr_mer.pipeline.cache import read_cache
from fr_mer.pipeline.labels import sample_key


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(subjects=2, clips_per_subject=3, model="fr", seeds=(0,), epochs=2, jobs=2)
    metrics = run_demo(out, settings)
    return out, metrics


def test_demo_runs_every_stage_and_reports(demo_run):
    out, metrics = demo_run
    assert metrics["n_folds"] == 6 and metrics["n_samples"] == 18
    assert not metrics["missing_samples"]
    for scope in ("full", "casme2", "samm", "smic"):
        assert 0.0 <= metrics[scope]["uf1"] <= 1.0
    assert set(metrics["demo_timings_seconds"]) == {"synth", "scan", "preprocess", "evaluate"}
    assert (out / "scan.csv").is_file() and (out / "cache.h5").is_file()
    assert (out / "results" / "summary.md").is_file()


def test_demo_rerun_reuses_finished_work(demo_run):
    out, first = demo_run
    again = run_demo(out, DemoSettings(subjects=2, clips_per_subject=3, model="fr", seeds=(0,), epochs=2, jobs=2))
    assert again["full"] == first["full"]
    assert again["demo_timings_seconds"]["evaluate"] < first["demo_timings_seconds"]["evaluate"]


def test_train_then_predict_one_pair(demo_run, tmp_path):
    out, _ = demo_run
    listing = out / "data" / "synthetic_3class_gt.csv"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--cache", str(out / "cache.h5"), "--model", "fr", "--epochs", "1",
                                  "--composite-list", str(listing), "--exclude-subject", "casme2/sub01",
                                  "--out", str(tmp_path / "fr.pt")])
    assert result.exit_code == 0, result.output
    scan_rows = (out / "scan.csv").read_text().splitlines()
    header = scan_rows[0].split(",")
    row = dict(zip(header, scan_rows[1].split(",")))
    result = runner.invoke(main, ["predict", "--model", str(tmp_path / "fr.pt"), "--onset", row["onset_path"],
                                  "--apex", row["apex_path"], "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert set(payload["probabilities"]) == {"negative", "positive", "surprise"}
    assert sum(payload["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # The demo's cache is raw flow (the default): the checkpoint carries the scale fitted in training,
    # and predict applies it: the pair's probabilities are the model's on the pair's cached flow.
    model, info = load_checkpoint(tmp_path / "fr.pt")
    assert info["options"]["normalise"] == "scale" and not torch.equal(model.input_scale, torch.ones(2))
    cache = read_cache(out / "cache.h5", arrays=["flow"])
    position = list(cache.keys).index(sample_key(row["dataset"], row["subject"], row["clip"]))
    flow = torch.as_tensor(cache.arrays["flow"][position][None, :2])  # fr reads (u, v)
    with torch.no_grad():
        cached = torch.softmax(model({"flow": flow})["logits"], dim=1)[0].tolist()
    assert list(payload["probabilities"].values()) == pytest.approx(cached, abs=1e-4)
