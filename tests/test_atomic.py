"""Atomic writes (fr_mer.atomic) under concurrent writers: two ``evaluate --from-end`` runs in one folder.

Two processes start together (a barrier) many times over; each records the same
run's config in one results folder, as two runs of one command started at once
do, then writes one finished fold's file a few times (two runs that both trained
it). Before fr_mer.atomic both wrote one fixed ``NAME.tmp``: one's rename took the
other's file, and the other failed with FileNotFoundError (within the first rounds).
"""
from __future__ import annotations

import json
import multiprocessing
import traceback
import types
from pathlib import Path

import pytest

from fr_mer import atomic
from fr_mer.config import to_record
from fr_mer.pipeline.labels import COMPOSITE_SPACE
from fr_mer.results_folder import CONFIG_FILE, ResultsFolder, atomic_json
from fr_mer.run_plan import EvalConfig, EvaluationError

ROUNDS = 100

#: Writes per round of one finished fold's file by both processes (two runs that both trained it).
FOLD_WRITES = 5


def plan_of(model: str, cache: Path) -> types.SimpleNamespace:
    """What ``check_or_write_config`` reads of a RunPlan: its config, cache and label space."""
    return types.SimpleNamespace(config=EvalConfig(model=model, seeds=(0,)), cache=cache, label_space=COMPOSITE_SPACE)


def record_configs(base: str, model: str, barrier, results) -> None:
    """Process body: in each round's folder, record (or check) the run's config; report each outcome."""
    outcomes = []
    for index in range(ROUNDS):
        folder = Path(base) / f"run{index}"
        barrier.wait()
        try:
            ResultsFolder(folder).check_or_write_config(plan_of(model, Path(base) / "cache.h5"), overwrite=False)
            for _ in range(FOLD_WRITES):
                atomic_json(folder / "folds" / "seed0" / "casme2-sub01.json", {"seed": 0, "pred": [1, 2]})
            outcomes.append("ok")
        except EvaluationError as error:
            outcomes.append(f"refused: {error}")
        except Exception:  # noqa: BLE001  (anything else is the race this test is about)
            outcomes.append(traceback.format_exc())
        atomic.write_text(Path(base) / "shared.txt", f"{model}\n" * 1000)  # one file, rewritten by both
    results.put((model, outcomes))


def run_together(base: Path, models: tuple[str, str]) -> list[tuple[str, list[str]]]:
    """Each process's model and outcomes, one process per model."""
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier, results = context.Barrier(len(models)), context.Queue()
    processes = [context.Process(target=record_configs, args=(str(base), model, barrier, results)) for model in models]
    for process in processes:
        process.start()
    found = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return found


def test_two_processes_recording_the_same_run_at_once_agree(tmp_path):
    outcomes = [o for _, outcomes in run_together(tmp_path, ("fr", "fr")) for o in outcomes]
    assert outcomes == ["ok"] * (2 * ROUNDS), next(o for o in outcomes if o != "ok")
    expected = {"config": to_record(EvalConfig(model="fr", seeds=(0,))), "cache": str(tmp_path / "cache.h5"),
                "label_space": COMPOSITE_SPACE.record()}
    for index in range(ROUNDS):
        folder = tmp_path / f"run{index}"
        assert sorted(p.name for p in folder.rglob("*")) == sorted([CONFIG_FILE, "folds", "seed0", "casme2-sub01.json"])
        assert json.loads((folder / CONFIG_FILE).read_text()) == expected  # no temporary file left behind, above
        assert json.loads((folder / "folds" / "seed0" / "casme2-sub01.json").read_text()) == {"seed": 0, "pred": [1, 2]}
    assert (tmp_path / "shared.txt").read_text() == "fr\n" * 1000


def test_of_two_different_runs_started_at_once_one_records_and_the_other_is_refused(tmp_path):
    found = dict(run_together(tmp_path, ("fr", "ststnet")))
    for index in range(ROUNDS):
        pair = sorted((found["fr"][index][:7], found["ststnet"][index][:7]))
        assert pair == ["ok", "refused"], (found["fr"][index], found["ststnet"][index])
        refused = found["fr"][index] if found["fr"][index] != "ok" else found["ststnet"][index]
        assert "other settings (model" in refused
        winner = "fr" if found["fr"][index] == "ok" else "ststnet"
        recorded = json.loads((tmp_path / f"run{index}" / CONFIG_FILE).read_text())
        assert recorded["config"]["model"] == winner
    assert (tmp_path / "shared.txt").read_text() in ("fr\n" * 1000, "ststnet\n" * 1000)


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer died")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]
    assert atomic.create_text(tmp_path / "new.txt", "first") is True
    assert atomic.create_text(tmp_path / "new.txt", "second") is False
    assert (tmp_path / "new.txt").read_text() == "first"
    with atomic.atomic_path(tmp_path / "a.npz", suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz") and tmp.parent == tmp_path and tmp.exists()
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.npz").read_bytes() == b"x"
