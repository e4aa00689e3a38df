"""``--jobs``: folds (and probe folds) in worker processes, the thread budget, and runs stopped midway.

Any number of workers must give the figures of one process at the same threads per fold; each
worker must start no more threads than its share of the usable cores; a run whose worker is
killed, whose own process is killed, or that is stopped with Ctrl-C, must leave only whole fold
files and no worker, and resume to the figures of a run never stopped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from joblib import delayed

from fr_mer.cli import main
from fr_mer.config import from_record, to_record
from fr_mer.errors import ParameterError
from fr_mer.evaluation import EvalConfig, EvaluationError, run_evaluation
from fr_mer.fold_dispatch import default_jobs, worker_threads
from fr_mer.limits import MAX_JOBS
from fr_mer.models import model_class
from fr_mer.pipeline.preprocess import PreprocessParams, PreprocessRun, start_workers
from fr_mer.probe import probe_folds
from fr_mer.protocols import subject_folds
from fr_mer.results_folder import FoldResult
from fr_mer.run_plan import make_plan
from fr_mer.workers import (OPENCV_WORKERS, TORCH_WORKERS, call_in_worker, threads_per_process, usable_cores,
                            worker_pool)
from tests.cachefactory import small_composite

FAST = model_class("ststnet").recipe.replace(epochs=2, batch_size=16, lr=1e-2)

#: Fields of a fold file or metrics.json that are times, dates or the machine, different in every run.
TIMINGS = {"seconds", "samples_per_second", "wall_seconds_this_run", "train_seconds_total", "written",
           "environment"}


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS}


def fold_files(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): without_timings(json.loads(p.read_text()))
            for p in sorted((out / "folds").rglob("*.json"))}


def assert_same_run(out: Path, reference: Path) -> None:
    """Same fold files, predictions and metrics (timings aside)."""
    assert fold_files(out) == fold_files(reference)
    assert (out / "predictions.csv").read_text() == (reference / "predictions.csv").read_text()
    assert (without_timings(json.loads((out / "metrics.json").read_text()))
            == without_timings(json.loads((reference / "metrics.json").read_text())))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 2-seed composite of 6 subjects (12 folds), evaluated in this process on one torch thread."""
    folder = tmp_path_factory.mktemp("jobs")
    cache, listing = small_composite(folder, subjects_per_db=2)
    config = EvalConfig(model="ststnet", recipe=FAST, seeds=(0, 1), composite_list=str(listing))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_evaluation(cache, folder / "one", config, device=torch.device("cpu"), jobs=1)
    finally:
        torch.set_num_threads(threads)
    return cache, listing, config, folder / "one"


def test_two_jobs_give_the_figures_of_one_process(small_run, tmp_path):
    cache, listing, config, reference = small_run
    seen = []
    run_evaluation(cache, tmp_path / "two", config, device=torch.device("cpu"), jobs=2, threads=1,
                   on_fold=lambda result, resumed: seen.append(resumed))
    assert seen == [False] * 12
    assert_same_run(tmp_path / "two", reference)
    # resumed with other --jobs, every fold is read back, nothing trained
    seen.clear()
    run_evaluation(cache, tmp_path / "two", config, device=torch.device("cpu"), jobs=3, threads=1,
                   on_fold=lambda result, resumed: seen.append(resumed))
    assert seen == [True] * 12
    assert_same_run(tmp_path / "two", reference)


def test_cli_jobs_with_stacked_folds_and_from_end(small_run, tmp_path):
    """Fold stacks are the tasks with --fold-batch; --from-end and the CLI's checks hold with --jobs."""
    cache, listing, config, reference = small_run
    args = ["evaluate", "--cache", str(cache), "--model", "ststnet", "--epochs", "2", "--batch-size", "16",
            "--lr", "0.01", "--seeds", "2", "--composite-list", str(listing), "--threads", "1"]
    stacked = CliRunner().invoke(main, args + ["--fold-batch", "3", "--jobs", "2", "--from-end",
                                               "--out", str(tmp_path / "stacked")])
    assert stacked.exit_code == 0, stacked.output
    assert "12 folds trained, 0 resumed" in stacked.output
    assert len(fold_files(tmp_path / "stacked")) == 12
    both = CliRunner().invoke(main, args + ["--jobs", "2", "--scheduler", "tcp://127.0.0.1:9",
                                            "--out", str(tmp_path / "x")])
    assert both.exit_code == 2 and "--scheduler" in both.output and not (tmp_path / "x").exists()
    for bad in (0, True, 2.0, MAX_JOBS + 1):  # the bounds of fr_mer.limits, as the CLI's
        with pytest.raises(ParameterError, match="--jobs"):
            run_evaluation(cache, tmp_path / "y", config, device="cpu", jobs=bad)
    with pytest.raises(EvaluationError, match="scheduler"):
        run_evaluation(cache, tmp_path / "y", config, device="cpu", jobs=2, scheduler="tcp://127.0.0.1:9")
    too_many = CliRunner().invoke(main, args + ["--jobs", str(MAX_JOBS + 1), "--out", str(tmp_path / "x")])
    assert too_many.exit_code == 2 and "--jobs" in too_many.output and not (tmp_path / "x").exists()
    assert not (tmp_path / "y").exists()


def test_default_jobs_and_threads(small_run):
    cache, _, config, _ = small_run
    plan = make_plan(config, cache)
    assert default_jobs("cpu", plan) == usable_cores()
    assert default_jobs("cuda", plan) == 1  # one GPU: its folds stack
    assert worker_threads(2, None) == max(1, usable_cores() // 2)
    assert worker_threads(2, 3) == 3  # --threads wins


def test_thread_budget_divides_the_usable_cores():
    assert [threads_per_process(n, cores=8) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert threads_per_process(1) == usable_cores()
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="processes"):
            threads_per_process(bad)


def test_usable_cores_follow_the_affinity_mask():
    """A process pinned to one CPU (taskset) has one usable core, whatever the machine has."""
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from fr_mer.workers import usable_cores, threads_per_process; "
            "print(usable_cores(), threads_per_process(1), threads_per_process(4))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "1"]


def test_preprocess_flows_in_the_run_process_take_its_share_of_the_cores(tmp_path):
    """With --flow-device cpu the run's process computes flows while its --jobs workers align."""
    params = PreprocessParams(flow_size=64, feature_size=16, flow_implementation="torch")
    for name, jobs, given, expected in (("a", 2, None, threads_per_process(3)), ("b", 1, None, usable_cores()),
                                        ("c", 2, 3, 3)):
        with PreprocessRun([], tmp_path / f"{name}.h5", params, jobs=jobs, flow_device="cpu",
                           flow_threads=given) as run:
            assert run.flow_threads == expected, name


def worker_threads_seen() -> dict[str, object]:
    """The thread limits of the process this runs in (a worker of worker_pool)."""
    import cv2

    return {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
            "opencv": cv2.getNumThreads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "pid": os.getpid()}


@pytest.mark.parametrize("threads", [1, 2])
def test_each_worker_starts_the_threads_of_its_share(threads):
    pool = worker_pool(2, threads, 4, TORCH_WORKERS)
    seen = dict(pool(delayed(call_in_worker)(worker_threads_seen, threads, os.getpid(), i) for i in range(4)))
    assert sorted(seen) == [0, 1, 2, 3]
    for limits in seen.values():
        assert limits["pid"] != os.getpid()
        assert (limits["torch"], limits["interop"], limits["opencv"]) == (threads, 1, threads)
        assert limits["OMP_NUM_THREADS"] == str(threads)  # BLAS / OpenMP loaded later read it


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)  # long enough for both workers of a pool to take tasks
    return os.getpid()


def _worker_pids(libraries: tuple[str, ...]) -> set[int]:
    pool = worker_pool(2, 1, 4, libraries)
    return {pid for _, pid in pool(delayed(call_in_worker)(_pid_after, 1, os.getpid(), i, 0.3) for i in range(4))}


def test_pools_of_other_libraries_get_their_own_workers():
    """A preprocessing worker is never handed an evaluation's folds (loky would restart it as leaking after
    one: fr_mer.workers.worker_pool), and an evaluation's workers go on with the probe's folds."""
    preprocessing = _worker_pids(OPENCV_WORKERS)
    evaluation = _worker_pids(TORCH_WORKERS)
    probe = _worker_pids(TORCH_WORKERS)
    assert preprocessing and evaluation and probe
    assert not preprocessing & (evaluation | probe)
    assert evaluation & probe


def _holds_models(params: PreprocessParams) -> tuple[int, bool]:
    from fr_mer.pipeline.preprocess import sample

    time.sleep(0.3)  # long enough for both workers of the pool to take tasks
    return os.getpid(), (params.align, str(params.predictor_path)) in sample._ALIGNERS


def test_preprocessing_workers_started_ahead_serve_preprocess_with_the_models_loaded():
    """fr-mer demo starts preprocessing's workers during its synthesis (start_workers): preprocess's pool,
    of the same jobs and threads, gets those workers, dlib's models already loaded."""
    params = PreprocessParams(flow_size=64)
    start_workers(params, 2)()
    pool = worker_pool(2, threads_per_process(2), 4, OPENCV_WORKERS)
    seen = dict(pool(delayed(call_in_worker)(_holds_models, 1, os.getpid(), i, params) for i in range(4))).values()
    assert any(loaded for _, loaded in seen)  # a worker started ahead, not a new one
    assert start_workers(params, 1)() is None  # one job: nothing to start


def test_evaluation_workers_record_their_share_of_the_cores(small_run, tmp_path):
    cache, listing, _, _ = small_run
    config = EvalConfig(model="ststnet", recipe=FAST.replace(epochs=1), seeds=(0,), composite_list=str(listing))
    metrics = run_evaluation(cache, tmp_path / "budget", config, device="cpu", jobs=2)
    assert metrics["environment"]["folds_ran_on"] == [
        {"device": "cpu", "torch_threads": threads_per_process(2), "folds": 6}]


def test_probe_jobs_give_the_same_folds(tmp_path):
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.array([f"sub{i:02d}" for i in range(5)]), 6)
    labels = np.tile(np.arange(3), 10)
    features = rng.normal(size=(30, 40)) + labels[:, None]
    folds = subject_folds(np.array(["casme2"] * 30), subjects)
    keys = [f"k{i}" for i in range(30)]
    one = probe_folds(features, labels, keys, folds, 3, jobs=1)
    two = probe_folds(features, labels, keys, folds, 3, jobs=2)
    assert [r.subject for r in two] == [f.name for f in folds]  # in the folds' order
    for a, b in zip(one, two):  # as JSON, where the NaN training loss of a probe equals itself
        assert json.dumps(without_timings(to_record(a))) == json.dumps(without_timings(to_record(b)))


# -- runs stopped midway ---------------------------------------------------------------------------

def _loky_workers(pid: int) -> list[int]:
    """The pids of ``pid``'s loky worker processes (its children that run loky's worker entry point)."""
    workers = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"loky" in command and b"resource_tracker" not in command:
                workers.append(int(child))
    return workers


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_folds(out: Path, process: subprocess.Popen, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(list((out / "folds").rglob("*.json"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no fold file written in time"
        time.sleep(0.05)


def _gone(pids: list[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()
                 and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[:1]]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _assert_whole_fold_files(out: Path) -> int:
    files = list((out / "folds").rglob("*.json"))
    for path in files:
        from_record(FoldResult, json.loads(path.read_text()), source=str(path))
    return len(files)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_killed_processes_and_ctrl_c_leave_whole_folds_and_resume_to_the_same_metrics(
        small_run, tmp_path, one_torch_thread):
    cache, listing, config, _ = small_run
    # 12 folds, long enough each that the run is still going when it is stopped (three times).
    slow = dataclasses.replace(config, recipe=config.recipe.replace(epochs=100))
    reference = tmp_path / "reference"
    run_evaluation(cache, reference, slow, device="cpu", jobs=1)  # in this process, on one thread
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fr_mer.cli", "evaluate", "--cache", str(cache), "--model", "ststnet",
               "--epochs", "100", "--batch-size", "16", "--lr", "0.01", "--seeds", "2", "--composite-list",
               str(listing), "--jobs", "2", "--threads", "1", "--out", str(out)]

    def start() -> subprocess.Popen:
        # as from a terminal: a test run started in the background by a shell (`cmd &`) inherits SIGINT
        # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)

    # 1. A worker killed (kill -9, as the out-of-memory killer does) while it trains.
    run = start()
    _wait_for_folds(out, run, 1)
    workers = _loky_workers(run.pid)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 1, output
    assert "a worker process training folds died" in output and "run the same command again" in output
    assert _gone(workers)  # the other worker ends with the run
    done = _assert_whole_fold_files(out)
    assert 1 <= done < 12

    # 2. The command's own process killed (kill -9): its workers notice and exit.
    run = start()
    _wait_for_folds(out, run, done + 1)
    workers = _loky_workers(run.pid)
    os.kill(run.pid, signal.SIGKILL)
    run.communicate(timeout=120)
    assert _gone(workers)
    done = _assert_whole_fold_files(out)

    # 3. Ctrl-C in a terminal: SIGINT to the whole process group, workers included.
    run = start()
    _wait_for_folds(out, run, done + 1)
    workers = _loky_workers(run.pid)
    os.killpg(run.pid, signal.SIGINT)
    output, _ = run.communicate(timeout=120)
    assert run.returncode != 0, output
    assert _gone(workers)
    done = _assert_whole_fold_files(out)
    assert done < 12, "the run ended before it was stopped: make the folds slower"

    # 4. The same command finishes the run with the figures of a run never stopped.
    last = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stdout + last.stderr
    assert f"{12 - done} folds trained, {done} resumed" in last.stdout
    assert_same_run(out, reference)
