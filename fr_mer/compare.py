"""Paired comparison of two finished evaluation runs (``fr-mer compare RUN_A RUN_B``).

A claim "A beats B" needs paired runs (the same seeds, folds and samples) and a
paired statistic (specs/protocol.md). From each run folder's ``predictions.csv``
this module computes, per scope (all samples, then each database):

- per seed, the pooled UF1 and UAR of each run and their difference A - B;
- the mean difference over seeds with its standard error (sd of the per-seed
  differences / sqrt(seeds)), and how many seeds went each way;
- a percentile bootstrap interval over subjects: subjects are drawn with
  replacement (all of a subject's samples go together, as a LOSO fold does), the
  pooled metric of both runs is recomputed per seed on the same draw, and the
  mean over seeds of the differences is taken;
- per seed, McNemar's exact test on the pooled predictions (samples that only A,
  or only B, classifies correctly).

The statistics are :mod:`fr_mer.paired_statistics`'; this module reads, checks and pairs the runs, and
writes the tables. A side may be several run folders (:func:`load_runs`): the seeds of one model and recipe
run by separate ``fr-mer evaluate`` calls (``--first-seed``), in another session or on another machine.

What each figure means is written up in docs/comparing.md.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np

from fr_mer.errors import FrMerError, ParameterError
from fr_mer.metrics import sample_sd, standard_error
from fr_mer.paired_statistics import METRICS, bootstrap_intervals, mcnemar_p_value, sign_counts
from fr_mer.pipeline.labels import CLASSES
from fr_mer.results_folder import (FULL_SCOPE, METRICS_FILE, PREDICTION_COLUMNS, PREDICTIONS_FILE,
                                   PROBABILITY_PREFIX)


METRIC_NAMES = {"uf1": "UF1", "uar": "UAR"}


class ComparisonError(FrMerError, ValueError):
    """Two runs that cannot be compared, or a run folder that cannot be read."""


@dataclasses.dataclass(frozen=True)
class RunPredictions:
    """One finished run: per seed, the predicted class of every sample (samples sorted by key)."""

    path: Path
    model: str | None
    protocol: str | None
    keys: tuple[str, ...]
    databases: tuple[str, ...]
    subjects: tuple[str, ...]
    true: np.ndarray
    predicted: dict[int, np.ndarray]
    #: The run's label space, from predictions.csv's ``p_<class>`` columns (the composite's three
    #: classes, CAS(ME)^3's 4 or 7, MEGC2018's objective classes).
    classes: tuple[str, ...] = CLASSES
    #: Every folder the predictions come from (:func:`load_runs`); ``(path,)`` for one run.
    folders: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        return " + ".join(str(f) for f in self.folders or (self.path,))

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(self.predicted))


@dataclasses.dataclass(frozen=True)
class MetricComparison:
    """One metric on one scope: per-seed values of both runs and the paired statistics."""

    scope: str
    metric: str
    n_samples: int
    n_subjects: int
    a: tuple[float, ...]
    b: tuple[float, ...]
    difference: tuple[float, ...]
    mean_a: float
    sd_a: float
    mean_b: float
    sd_b: float
    mean_difference: float
    se_difference: float
    interval: tuple[float, float]
    wins_a: int
    wins_b: int
    ties: int


@dataclasses.dataclass(frozen=True)
class McNemarTest:
    """McNemar's exact test for one seed and scope: the discordant samples and the two-sided p-value."""

    scope: str
    seed: int
    only_a_correct: int
    only_b_correct: int
    p_value: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    label_a: str
    label_b: str
    run_a: str
    run_b: str
    model_a: str | None
    model_b: str | None
    seeds: tuple[int, ...]
    n_bootstrap: int
    bootstrap_seed: int
    confidence: float
    metrics: tuple[MetricComparison, ...]
    mcnemar: tuple[McNemarTest, ...]

    def row(self, scope: str, metric: str) -> MetricComparison:
        return next(m for m in self.metrics if m.scope == scope and m.metric == metric)

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.scope for m in self.metrics))


def load_run(path: str | Path) -> RunPredictions:
    """Read a finished run folder's ``predictions.csv`` (and the model and protocol from ``metrics.json``)."""
    path = Path(path)
    if not path.is_dir():
        raise ComparisonError(f"{path}: no such run folder (the --out folder of fr-mer evaluate)")
    table = path / PREDICTIONS_FILE
    if not table.is_file():
        raise ComparisonError(f"{table}: missing; fr-mer evaluate writes it once the run's last fold has finished "
                              f"(run the same command again with --out {path} to finish the run)")
    try:
        text = table.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ComparisonError(f"{table}: byte {error.start} is not UTF-8 text (stray bytes?); expected the "
                              "predictions.csv that fr-mer evaluate writes: run that evaluation again") from None
    if "\x00" in text:
        raise ComparisonError(f"{table}: line {text[:text.index(chr(0))].count(chr(10)) + 1} holds a NUL byte; "
                              "expected the predictions.csv that fr-mer evaluate writes: run that evaluation again")
    try:
        predicted, samples, classes = _read_predictions(table, text)
    except csv.Error as error:
        raise ComparisonError(f"{table}: not a readable CSV table ({error}); expected the predictions.csv that "
                              "fr-mer evaluate writes: run that evaluation again") from None
    if not predicted:
        raise ComparisonError(f"{table}: no predictions")
    keys = tuple(sorted(samples))
    for seed, rows in predicted.items():
        if len(rows) != len(keys):
            absent = [k for k in keys if k not in rows]
            raise ComparisonError(f"{table}: seed {seed} has no prediction for {len(absent)} of the run's "
                                  f"{len(keys)} samples ({_first(absent)}); the file is incomplete")
    model, protocol = _run_settings(path)
    return RunPredictions(
        path=path, model=model, protocol=protocol, keys=keys,
        databases=tuple(samples[k][0] for k in keys), subjects=tuple(samples[k][1] for k in keys),
        true=np.array([samples[k][2] for k in keys], dtype=np.int64),
        predicted={seed: np.array([rows[k] for k in keys], dtype=np.int64) for seed, rows in sorted(predicted.items())},
        classes=classes,
    )


def _read_predictions(
        table: Path, text: str) -> tuple[dict[int, dict[str, int]], dict[str, tuple[str, str, int]], tuple[str, ...]]:
    """predictions.csv's rows: per seed sample -> predicted class, per sample (database, subject, true), the classes."""
    predicted: dict[int, dict[str, int]] = {}
    samples: dict[str, tuple[str, str, int]] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in PREDICTION_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ComparisonError(f"{table}: no column {', '.join(missing)}; expected the predictions.csv "
                              "that fr-mer evaluate writes")
    classes = tuple(c[len(PROBABILITY_PREFIX):] for c in reader.fieldnames or ()
                    if c.startswith(PROBABILITY_PREFIX)) or CLASSES
    for line, row in enumerate(reader, start=2):
        if None in row or None in row.values():  # a row with more or fewer cells than the header
            raise ComparisonError(f"{table} row {line}: not the {len(reader.fieldnames)} cells of the header; "
                                  "the file is damaged: run that evaluation again")
        seed, sample, true, pred = _parse_row(table, line, row, classes)
        seen = samples.setdefault(sample, (row["database"], row["subject"], true))
        if seen != (row["database"], row["subject"], true):
            raise ComparisonError(
                f"{table} row {line}: sample {sample} is {_describe(seen, classes)} in an earlier row "
                f"but {_describe((row['database'], row['subject'], true), classes)} here")
        if sample in predicted.setdefault(seed, {}):
            raise ComparisonError(f"{table} row {line}: sample {sample} is listed twice for seed {seed}")
        predicted[seed][sample] = pred
    return predicted, samples, classes


def load_runs(paths: str | Path | Sequence[str | Path]) -> RunPredictions:
    """One side of a comparison: a run folder, or several runs of the same model and settings whose
    seeds were run apart (``--first-seed``), merged into one set of seeds.

    The folders must hold the same samples, folds and labels, the same model, protocol, options and
    recipe (from ``metrics.json``), and no seed twice.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ParameterError("no run folder given")
    runs = [load_run(p) for p in paths]
    first = runs[0]
    settings = _run_config(first.path)
    predicted = dict(first.predicted)
    for run in runs[1:]:
        where = f"{first.path} and {run.path}"
        if (run.model, run.protocol) != (first.model, first.protocol) or _run_config(run.path) != settings:
            raise ComparisonError(f"{where} are not runs of the same model, protocol, options and recipe "
                                  f"(their metrics.json differ); one side of a comparison merges only the seeds "
                                  "of one configuration")
        check_same_samples(first, run)
        repeated = sorted(set(predicted) & set(run.predicted))
        if repeated:
            raise ComparisonError(f"{where} both hold seed {seed_list(repeated)}; give each seed once")
        predicted.update(run.predicted)
    return dataclasses.replace(first, predicted=dict(sorted(predicted.items())),
                               folders=tuple(r.path for r in runs))


def _parse_row(table: Path, line: int, row: dict[str, str], classes: Sequence[str]) -> tuple[int, str, int, int]:
    try:
        seed = int(row["seed"])
    except (TypeError, ValueError):
        raise ComparisonError(f"{table} row {line}: seed {row['seed']!r} is not an integer") from None
    labels = []
    for column in ("true", "predicted"):
        if row[column] not in classes:
            raise ComparisonError(f"{table} row {line}: {column} class {row[column]!r} is not one of "
                                  f"{', '.join(classes)}")
        labels.append(classes.index(row[column]))
    return seed, row["sample"], labels[0], labels[1]


def _describe(sample: tuple[str, str, int], classes: Sequence[str]) -> str:
    database, subject, true = sample
    return f"{database}/{subject}, true {classes[true]}"


def _first(items: Sequence[str], count: int = 3) -> str:
    return ", ".join(items[:count]) + (", ..." if len(items) > count else "")


def _run_metrics(path: Path) -> dict:
    """The run's ``metrics.json``; empty where it is absent or unreadable (the predictions still compare)."""
    try:
        metrics = json.loads((path / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _run_settings(path: Path) -> tuple[str | None, str | None]:
    """The model and protocol the run's ``metrics.json`` names; None where it is absent or unreadable."""
    metrics = _run_metrics(path)
    return metrics.get("model"), metrics.get("protocol")


def _run_config(path: Path) -> tuple[str | None, ...]:
    """The options and recipe the run's ``metrics.json`` records, as comparable text (None if absent)."""
    metrics = _run_metrics(path)
    return tuple(json.dumps(metrics[k], sort_keys=True) if k in metrics else None for k in ("options", "recipe"))


def check_paired(run_a: RunPredictions, run_b: RunPredictions) -> None:
    """Refuse two runs that do not share seeds, folds and samples (same keys, same true labels)."""
    where = f"{run_a.label} and {run_b.label}"
    if run_a.seeds != run_b.seeds:
        raise ComparisonError(
            f"{where} ran different seeds ({seed_list(run_a.seeds)} and {seed_list(run_b.seeds)}); "
            "a paired comparison needs the same seeds (fr-mer evaluate --seeds and --first-seed)")
    check_same_samples(run_a, run_b)


def check_same_samples(run_a: RunPredictions, run_b: RunPredictions) -> None:
    """Refuse two runs of other protocols, label spaces, samples, folds or true labels."""
    where = f"{run_a.label} and {run_b.label}"
    if run_a.protocol and run_b.protocol and run_a.protocol != run_b.protocol:
        raise ComparisonError(f"{where} ran different protocols ({run_a.protocol} and {run_b.protocol}); "
                              "a paired comparison needs the same folds")
    if run_a.classes != run_b.classes:
        raise ComparisonError(f"{where} predicted different classes ({', '.join(run_a.classes)} and "
                              f"{', '.join(run_b.classes)}); a paired comparison needs the same label space")
    if run_a.keys != run_b.keys:
        only_a = sorted(set(run_a.keys) - set(run_b.keys))
        only_b = sorted(set(run_b.keys) - set(run_a.keys))
        raise ComparisonError(
            f"{where} predicted different samples ({len(only_a)} only in the first: {_first(only_a) or 'none'}; "
            f"{len(only_b)} only in the second: {_first(only_b) or 'none'}); use the same cache and composite list")
    for i, key in enumerate(run_a.keys):
        fold_a = (run_a.databases[i], run_a.subjects[i])
        fold_b = (run_b.databases[i], run_b.subjects[i])
        if fold_a != fold_b:
            raise ComparisonError(f"{where}: sample {key} is held out with {'/'.join(fold_a)} in the first run "
                                  f"and with {'/'.join(fold_b)} in the second; the folds differ")
        if run_a.true[i] != run_b.true[i]:
            raise ComparisonError(f"{where}: sample {key} is labelled {run_a.classes[run_a.true[i]]} in the first "
                                  f"run and {run_b.classes[run_b.true[i]]} in the second; the composite lists differ")


def seed_list(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds))


def compare_runs(path_a: str | Path | Sequence[str | Path], path_b: str | Path | Sequence[str | Path], *,
                 n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> Comparison:
    """Load, check and compare two runs; ``seed`` seeds the bootstrap's generator.

    Each side is a run folder or a list of folders whose seeds are merged (:func:`load_runs`).
    """
    if n_bootstrap < 1:
        raise ParameterError(f"bootstrap resamples must be 1 or more, got {n_bootstrap}")
    if not 0 < confidence < 1:
        raise ParameterError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    run_a, run_b = load_runs(path_a), load_runs(path_b)
    check_paired(run_a, run_b)
    seeds = run_a.seeds
    n_classes = len(run_a.classes)
    pred_a = np.stack([run_a.predicted[s] for s in seeds])
    pred_b = np.stack([run_b.predicted[s] for s in seeds])
    folds = np.array([f"{d}/{s}" for d, s in zip(run_a.databases, run_a.subjects)])
    databases = np.array(run_a.databases)
    present = tuple(dict.fromkeys(sorted(run_a.databases)))
    # A single-database run's full scope is that database: no separate row.
    scopes = [(FULL_SCOPE, np.arange(len(folds)))]
    if len(present) > 1:
        scopes += [(db, np.flatnonzero(databases == db)) for db in present]
    rng = np.random.default_rng(seed)
    metrics, tests = [], []
    for scope, index in scopes:
        true = run_a.true[index]
        intervals = bootstrap_intervals(true, pred_a[:, index], pred_b[:, index], folds[index], n_bootstrap,
                                        rng, confidence, n_classes)
        n_subjects = len(set(folds[index]))
        for name, metric in METRICS.items():
            a = tuple(metric(true, p, n_classes) for p in pred_a[:, index])
            b = tuple(metric(true, p, n_classes) for p in pred_b[:, index])
            metrics.append(_metric_comparison(scope, name, len(index), n_subjects, a, b, intervals[name]))
        for s, p_a, p_b in zip(seeds, pred_a[:, index], pred_b[:, index]):
            only_a = int(np.sum((p_a == true) & (p_b != true)))
            only_b = int(np.sum((p_b == true) & (p_a != true)))
            tests.append(McNemarTest(scope, s, only_a, only_b, mcnemar_p_value(only_a, only_b)))
    label_a, label_b = _short_label(run_a), _short_label(run_b)
    if label_a == label_b:
        label_a, label_b = run_a.label, run_b.label
    return Comparison(
        label_a=label_a, label_b=label_b, run_a=run_a.label, run_b=run_b.label,
        model_a=run_a.model, model_b=run_b.model, seeds=seeds, n_bootstrap=n_bootstrap, bootstrap_seed=seed,
        confidence=confidence, metrics=tuple(metrics), mcnemar=tuple(tests),
    )


def _short_label(run: RunPredictions) -> str:
    """The folder names of a side (its paths where a name is empty), joined with +; past three
    folders, the first and a count (the full list stays in ``run_a``/``run_b``)."""
    names = [f.name or str(f) for f in run.folders or (run.path,)]
    return " + ".join(names) if len(names) <= 3 else f"{names[0]} + {len(names) - 1} more folders"


def _metric_comparison(scope: str, metric: str, n_samples: int, n_subjects: int, a: tuple[float, ...],
                       b: tuple[float, ...], interval: tuple[float, float]) -> MetricComparison:
    difference = tuple(x - y for x, y in zip(a, b))
    wins_a, wins_b, ties = sign_counts(difference)
    return MetricComparison(
        scope=scope, metric=metric, n_samples=n_samples, n_subjects=n_subjects, a=a, b=b, difference=difference,
        mean_a=statistics.fmean(a), sd_a=sample_sd(a), mean_b=statistics.fmean(b), sd_b=sample_sd(b),
        mean_difference=statistics.fmean(difference), se_difference=standard_error(difference),
        interval=interval, wins_a=wins_a, wins_b=wins_b, ties=ties,
    )
