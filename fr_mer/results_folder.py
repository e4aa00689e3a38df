"""An evaluation's results folder: its recorded config and one file per finished fold.

``OUT/config.json`` records the run's settings (:class:`~fr_mer.run_plan.EvalConfig`)
and its cache; ``OUT/folds/seed<S>/<database>-<subject>.json`` holds one
finished fold (:class:`FoldResult`), written atomically (:mod:`fr_mer.atomic`: a
temporary file of the writer's own, then ``os.replace``), so a killed run leaves
only whole files and a rerun resumes after them, and two runs in one folder at once
(``--from-end`` beside a plain run) never trip over each other's files. With
``--audit-selection``, ``<database>-<subject>.audit.json`` beside it holds the
fold's per-epoch predictions (:mod:`fr_mer.selection_audit`), written first; the report step
gathers them into ``OUT/epoch_predictions.npz`` (:mod:`fr_mer.epoch_archive`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from fr_mer import atomic
from fr_mer.config import from_record, settings, to_record
from fr_mer.errors import FrMerError
from fr_mer.run_plan import EvalConfig, EvaluationError, FoldJob, RunPlan
from fr_mer.selection_grid import FoldSelection

#: The files of a run's folder: the recorded settings (this module), then the reports of a finished run
#: (written by :func:`fr_mer.report.write_reports`, read by ``fr-mer compare`` and the benchmarks' tables).
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
ENSEMBLE_PREDICTIONS_FILE = "ensemble_predictions.csv"
FOLD_LOG_FILE = "folds.csv"
SUMMARY_FILE = "summary.md"
#: ``--audit-selection``: every fold's held-out predictions after every epoch, compressed (fr_mer.epoch_archive).
EPOCH_PREDICTIONS_FILE = "epoch_predictions.npz"
#: ``predictions.csv``'s first columns; one ``p_<class>`` column per class of the label space follows.
PREDICTION_COLUMNS = ("sample", "subject", "database", "true", "predicted", "seed")
PROBABILITY_PREFIX = "p_"
#: The scope of every prediction pooled (``metrics.json``'s key); each database's slice is a scope too.
FULL_SCOPE = "full"


@settings
class FoldResult:
    """One finished (seed, fold): the held-out subject's predictions and the training's log."""

    seed: int
    database: str
    subject: str
    keys: list[str]
    true: list[int]
    pred: list[int]
    proba: list[list[float]]
    n_train: int
    seconds: float
    train_loss: float
    samples_per_second: float
    val_uf1: float | None = None
    #: Where the fold was trained (``cpu``, ``cuda:0 (NVIDIA H100 ...)``) and with how many torch
    #: threads: a resumed run on another machine is then stated in the reports, not hidden.
    device: str | None = None
    torch_threads: int | None = None
    #: ``--select``: the candidate chosen for this fold and every candidate's inner score.
    selection: FoldSelection | None = None
    #: What the fold's model resolved its input normalisation to (``MERModel.input_record``: for the flow
    #: models the mode and, on a raw cache, the per-channel scale fitted on the fold's training rows).
    inputs: dict[str, Any] | None = None


def atomic_json(path: Path, payload: object, indent: int | None = 1) -> None:
    """``payload`` as JSON in ``path``, atomically (:func:`fr_mer.atomic.write_text`)."""
    atomic.write_text(path, _json_text(payload, indent))


def _json_text(payload: object, indent: int | None = 1) -> str:
    return json.dumps(payload, indent=indent)


def _read_json(path: Path, what: str, remedy: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(f"{path}: {what} is damaged ({error}); {remedy}") from None


class ResultsFolder:
    """The folder ``--out`` of an evaluation run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise EvaluationError(f"--out {self.path}: exists and is not a folder; give a folder for the results")

    def fold_path(self, job: FoldJob) -> Path:
        return self._fold_file(job.seed, job.fold.database, job.fold.name, ".json")

    def audit_path(self, seed: int, database: str, name: str) -> Path:
        """The (seed, fold)'s per-epoch log of ``--audit-selection`` (:mod:`fr_mer.selection_audit`), beside
        its fold file; ``name`` is the fold's (:attr:`FoldResult.subject`)."""
        return self._fold_file(seed, database, name, ".audit.json")

    def _fold_file(self, seed: int, database: str, name: str, suffix: str) -> Path:
        return self.path / "folds" / f"seed{seed}" / f"{database}-{name}{suffix}"

    def read_fold(self, job: FoldJob) -> FoldResult | None:
        """The finished fold's result, or None when it has not been written."""
        path = self.fold_path(job)
        if not path.exists():
            return None
        remedy = "delete the file to train that fold again (the other folds are kept)"
        try:
            return from_record(FoldResult, _read_json(path, "this finished fold's file", remedy), source=str(path))
        except FrMerError as error:
            raise EvaluationError(f"{error}; {remedy}") from None

    def write_fold(self, job: FoldJob, result: FoldResult) -> None:
        atomic_json(self.fold_path(job), to_record(result))

    def finished_and_pending(self, jobs: Sequence[FoldJob]
                             ) -> tuple[list[tuple[FoldJob, FoldResult]], list[FoldJob]]:
        """``jobs`` split into those whose file is written (with their results) and the rest, in order."""
        finished, pending = [], []
        for job in jobs:
            result = self.read_fold(job)
            if result is None:
                pending.append(job)
            else:
                finished.append((job, result))
        return finished, pending

    def check_or_write_config(self, plan: RunPlan, overwrite: bool) -> None:
        """Record the plan's settings, or check that the folder's recorded run has the same ones.

        Raises :class:`EvaluationError` naming the settings that differ (or the
        damaged file), before any fold is trained. Runs started in one folder at
        once (``--from-end``) agree: the first records the settings
        (:func:`fr_mer.atomic.create_text`), the others check theirs against it.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        # the label space is recorded for readers of the folder; the config's protocol and
        # classes, compared on resume, determine it
        record = {"config": to_record(plan.config), "cache": str(plan.cache),
                  "label_space": plan.label_space.record()}
        path = self.path / CONFIG_FILE
        if overwrite:
            if (self.path / "folds").exists():
                for fold_file in (self.path / "folds").rglob("*.json"):
                    fold_file.unlink(missing_ok=True)  # another --overwrite run may have taken it
            atomic_json(path, record)
            return
        if not path.exists() and atomic.create_text(path, _json_text(record)):
            return  # this run recorded the settings
        # a recorded run: a resumed one, or one started in this folder at the same moment
        remedy = "delete it (the finished folds are kept if the settings are the same), or use a fresh --out"
        stored = _read_json(path, "the run's recorded settings", remedy)
        if not isinstance(stored, dict):
            raise EvaluationError(f"{path}: the run's recorded settings are damaged (not a mapping); {remedy}")
        try:
            # A record written before a setting existed takes its default (the value it ran with).
            stored_config = to_record(from_record(EvalConfig, stored.get("config", {}), source=str(path)))
        except FrMerError as error:
            raise EvaluationError(f"{error}; {remedy}") from None
        differ = [key for key, value in record["config"].items()
                  if not _same_setting(key, stored_config.get(key), value)]
        if not _same_path(stored.get("cache"), record["cache"]):
            differ.append("cache")
        if differ:
            raise EvaluationError(
                f"{path}: {self.path} holds a run with other settings ({', '.join(differ)}); "
                "use another --out, or --overwrite to start again"
            )


def recorded_fold_batch(out_dir: str | Path | None) -> int | None:
    """The ``fold_batch`` a run in ``out_dir`` recorded (a resumed run keeps it), or None: no recorded run, or
    a record that cannot be read (:meth:`ResultsFolder.check_or_write_config` then names the damaged file)."""
    recorded = Path(out_dir) / CONFIG_FILE if out_dir is not None else None
    if recorded is None or not recorded.is_file():
        return None
    try:
        value = json.loads(recorded.read_text()).get("config", {}).get("fold_batch")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _same_path(stored: object, current: object) -> bool:
    """Paths name the same file: a relative one in an older record is taken from the working folder."""
    if stored is None or current is None:
        return stored is current
    return Path(str(stored)).resolve() == Path(str(current)).resolve()


def _same_setting(key: str, stored: object, current: object) -> bool:
    if key == "composite_list":
        return _same_path(stored, current)
    return stored == current
