"""``--scheduler``: preprocess and evaluate on a dask.distributed cluster (a LocalCluster the tests start).

The cluster's results must be the local run's: the same cache arrays, the same
fold files and reports (timings aside), also when a worker is killed while it
holds a task.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

distributed = pytest.importorskip("distributed")

from fr_mer import cluster  # noqa: E402
from fr_mer.cli import main  # noqa: E402
from fr_mer.evaluation import EvalConfig, run_evaluation  # noqa: E402
from fr_mer.models import model_class  # noqa: E402
from fr_mer.pipeline.cache import read_cache  # noqa: E402
from fr_mer.pipeline.preprocess import PreprocessParams, preprocess  # noqa: E402
from tests.cachefactory import small_composite  # noqa: E402
from tests.test_preprocess import FAST, shift_clip, write_face_smic  # noqa: E402

#: Metrics that are times or dates, different in every run.
# "environment" describes the machine (the main process reads on one thread count, workers train on
# another), not the result.
TIMINGS = {"wall_seconds_this_run", "train_seconds_total", "written", "environment"}


class KillOnce(distributed.WorkerPlugin):
    """Kill (SIGKILL) the first worker process that starts a task whose key begins with ``prefix``.

    The marker file makes it once for the whole cluster, the worker that the
    nanny starts again included.
    """

    def __init__(self, prefix: str, marker: str) -> None:
        self.prefix = prefix
        self.marker = marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  memory_limit="1.5GiB") as local, distributed.Client(local) as connected:
        yield connected


@pytest.fixture
def kill_once(client, tmp_path):
    """``arm(prefix)``: the next task of that key prefix kills its worker; the plugin is removed afterwards."""
    names = []

    def arm(prefix: str) -> Path:
        marker = tmp_path / f"killed-{prefix}"
        names.append(f"kill-{prefix}-{tmp_path.name}")
        client.register_plugin(KillOnce(prefix, str(marker)), name=names[-1])
        return marker

    yield arm
    for name in names:
        client.unregister_worker_plugin(name)


def test_as_finished_keeps_a_bounded_number_of_tasks_in_flight(client):
    drawn = []

    def items():
        for i in range(12):
            drawn.append(i)
            yield i

    seen = []
    for item, future in cluster.as_finished(client, pow, items(), 2, name="square", limit=3):
        assert len(drawn) <= len(seen) + 3  # never more than 3 submitted and not yet taken
        seen.append((item, future.result()))
    assert sorted(seen) == [(i, i * i) for i in range(12)]
    assert cluster.in_flight_limit(client) == 2 * 2  # two per worker thread


# -- preprocess ------------------------------------------------------------------

@pytest.fixture(scope="module")
def smic_and_local_cache(tmp_path_factory):
    """An SMIC-HS release of 3 clips, the preprocess arguments, and the cache of a local run of them."""
    folder = tmp_path_factory.mktemp("preprocess")
    write_face_smic(folder / "smic", 3)
    args = ["preprocess", "--dataset", "smic", "--root", str(folder / "smic"), "--flow-size", "64",
            "--head-motion", "none"]
    local = CliRunner().invoke(main, args + ["--out", str(folder / "local.h5"), "--jobs", "1"])
    assert local.exit_code == 0, local.output
    return args, folder / "local.h5"


def assert_same_cache(path: Path, reference: Path) -> None:
    a = read_cache(reference, arrays=["flow", "onset_face", "apex_face", "landmarks"])
    b = read_cache(path, arrays=["flow", "onset_face", "apex_face", "landmarks"])
    assert len(a) == 3 and sorted(b.keys) == sorted(a.keys) and not b.failures
    order = [b.keys.index(k) for k in a.keys]
    np.testing.assert_allclose(b.arrays["flow"][order], a.arrays["flow"], atol=1e-3)  # as test_two_jobs_...
    for name in ("onset_face", "apex_face", "landmarks"):
        np.testing.assert_array_equal(b.arrays[name][order], a.arrays[name])
    assert b.params == a.params


def test_cli_preprocess_on_a_cluster_writes_the_local_cache_and_resumes(client, smic_and_local_cache, tmp_path,
                                                                        monkeypatch):
    args, reference = smic_and_local_cache
    out = tmp_path / "cluster.h5"
    runner = CliRunner()
    result = runner.invoke(main, args + ["--out", str(out), "--scheduler", client.scheduler.address])
    assert result.exit_code == 0, result.output
    assert "on the cluster at" in result.output and "3 done, 0 skipped" in result.output
    assert_same_cache(out, reference)
    assert not out.with_name(out.name + ".lock").exists()  # released with the run
    again = runner.invoke(main, args + ["--out", str(out), "--scheduler", client.scheduler.address])
    assert again.exit_code == 0 and "0 done, 3 skipped" in again.output

    both = runner.invoke(main, args + ["--out", str(tmp_path / "c.h5"), "--jobs", "2", "--scheduler",
                                       "tcp://127.0.0.1:9"])
    assert both.exit_code == 2 and "--scheduler" in both.output
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_SECONDS", 1)
    clips = [shift_clip(tmp_path / "clips", 1.0)]
    with pytest.raises(cluster.ClusterError, match="cannot reach the scheduler"):
        preprocess(clips, tmp_path / "c.h5", PreprocessParams(**FAST), scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "c.h5").exists()  # nothing written before the cluster answers


def test_preprocess_survives_a_killed_worker(client, smic_and_local_cache, kill_once, tmp_path):
    args, reference = smic_and_local_cache
    marker = kill_once("fr-mer-clip")
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "cluster.h5"), "--scheduler",
                                              client.scheduler.address])
    assert result.exit_code == 0, result.output
    assert marker.exists()  # a worker did die holding a clip
    assert "3 done, 0 skipped" in result.output and "0 failed" in result.output
    assert_same_cache(tmp_path / "cluster.h5", reference)


# -- evaluate --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluation_reference(tmp_path_factory):
    """A one-seed composite of 3 subjects (3 folds), evaluated locally on one torch thread (as each worker runs)."""
    folder = tmp_path_factory.mktemp("evaluation")
    cache, listing = small_composite(folder, subjects_per_db=1)
    config = EvalConfig(model="ststnet", recipe=model_class("ststnet").recipe.replace(epochs=1), seeds=(0,),
                        composite_list=str(listing))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = run_evaluation(cache, folder / "local", config, device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    return cache, listing, config, folder / "local", metrics


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS | {"seconds", "samples_per_second"}}


def assert_same_results(out: Path, reference: Path, metrics: dict, reference_metrics: dict) -> None:
    assert without_timings(metrics) == without_timings(reference_metrics)
    assert without_timings(json.loads((out / "metrics.json").read_text())) == without_timings(reference_metrics)
    for name in ("predictions.csv", "config.json"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    folds = sorted(p.relative_to(reference) for p in (reference / "folds").rglob("*.json"))
    assert sorted(p.relative_to(out) for p in (out / "folds").rglob("*.json")) == folds
    for fold in folds:
        assert (without_timings(json.loads((out / fold).read_text()))
                == without_timings(json.loads((reference / fold).read_text()))), fold


def test_cli_evaluate_on_a_cluster_writes_the_local_results_and_resumes(client, evaluation_reference, tmp_path):
    cache, listing, config, reference, reference_metrics = evaluation_reference
    out = tmp_path / "cli"
    # A fold already written (by an earlier, interrupted run) is read back, not trained again.
    first = next((reference / "folds" / "seed0").glob("*.json"))
    (out / "folds" / "seed0").mkdir(parents=True)
    (out / "folds" / "seed0" / first.name).write_bytes(first.read_bytes())
    result = CliRunner().invoke(main, [
        "evaluate", "--cache", str(cache), "--model", "ststnet", "--epochs", "1", "--seeds", "1",
        "--composite-list", str(listing), "--scheduler", client.scheduler.address, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "the workers of" in result.output and "2 folds trained, 1 resumed" in result.output
    assert_same_results(out, reference, json.loads((out / "metrics.json").read_text()), reference_metrics)


def test_evaluate_survives_a_killed_worker(client, evaluation_reference, kill_once, tmp_path):
    cache, listing, config, reference, reference_metrics = evaluation_reference
    marker = kill_once("fr-mer-folds")
    out = tmp_path / "cluster"
    metrics = run_evaluation(cache, out, config, device="cpu", scheduler=client)
    assert marker.exists()  # a worker did die holding a fold
    assert_same_results(out, reference, metrics, reference_metrics)
