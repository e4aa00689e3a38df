"""Evaluation reports: metrics.json, predictions.csv, folds.csv, summary.md, confusion PNGs.

A run of ``--audit-selection`` also gets ``selection_audit.json`` and ``.png``, and its per-epoch held-out
predictions in ``epoch_predictions.npz`` (:mod:`fr_mer.selection_audit`, :mod:`fr_mer.epoch_archive`).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fr_mer.config import to_record
from fr_mer.data import DeviceDataset
from fr_mer.environment import describe_environment
from fr_mer.metrics import confusion_matrix, mean_sd_text, pooled_metrics, seed_summary
from fr_mer.pipeline.labels import DATABASE_TITLES, key_subject
from fr_mer.protocols import Fold
from fr_mer.results_folder import (ENSEMBLE_PREDICTIONS_FILE, FOLD_LOG_FILE, FULL_SCOPE, METRICS_FILE,
                                   PREDICTION_COLUMNS, PREDICTIONS_FILE, PROBABILITY_PREFIX, SUMMARY_FILE, FoldResult)
from fr_mer.run_plan import RunPlan

#: ``full`` (every prediction pooled) then each database's slice, in protocol order.
SCOPES = (FULL_SCOPE,) + tuple(DATABASE_TITLES)


def missing_subjects(data: DeviceDataset) -> list[str]:
    """``database/subject`` of the protocol's list (a composite list naming a subject the cache lacks) that
    has no sample in the cache at all: no fold holds it out."""
    present = {f"{database}/{subject}" for database, subject in zip(data.databases, data.subjects)}
    listed = {key.rsplit("/", 1)[0] for key in data.missing}
    return sorted(listed - present)


def write_reports(out_dir: Path, plan: RunPlan, data: DeviceDataset, folds: Sequence[Fold],
                  results: Sequence[FoldResult], wall_seconds: float, *, ensemble: bool = False) -> dict:
    """Every report of a finished run into ``out_dir``; returns the metrics (``metrics.json``).

    ``ensemble``: also score the mean of the seeds' probabilities per sample (``metrics["ensemble"]``,
    ``ensemble_predictions.csv``), reported apart from the single seeds' mean and spread.
    """
    config, seeds = plan.config, plan.seeds
    classes = plan.label_space.classes
    scopes = (FULL_SCOPE,) + tuple(db for db in SCOPES[1:] if db in set(data.databases))
    metrics: dict[str, object] = {
        "protocol": config.protocol,
        "database": config.database,
        "label_space": plan.label_space.record(),
        "model": config.model,
        "options": dict(config.options),
        "recipe": to_record(plan.recipe),
        "seeds": list(seeds),
        "weights": config.weights_dir,
        "n_samples": len(data),
        "n_folds": len(folds),
        "missing_samples": data.missing,
        "missing_subjects": missing_subjects(data),
        "wall_seconds_this_run": round(wall_seconds, 2),
        "train_seconds_total": round(sum(r.seconds for r in results), 2),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {**describe_environment(data.device), "folds_ran_on": _fold_machines(results)},
    }
    for scope in SCOPES:
        if scope not in scopes:
            continue
        database = None if scope == FULL_SCOPE else scope
        if config.protocol == "loso" and scope != FULL_SCOPE:
            continue
        metrics[scope] = seed_summary({
            str(seed): pooled_metrics([r for r in results if r.seed == seed], database, len(classes))
            for seed in seeds})
    if any(r.selection is not None for r in results):  # --select (fr_mer.selection)
        from fr_mer.selection import selection_metrics

        metrics["selection"] = selection_metrics(plan, results)
    if ensemble:
        members = ensemble_predictions(results)
        metrics["ensemble"] = {"seeds": list(seeds), **{
            scope: _rounded(pooled_metrics(members, None if scope == FULL_SCOPE else scope, len(classes)))
            for scope in scopes if config.protocol != "loso" or scope == FULL_SCOPE}}
        _write_predictions(out_dir / ENSEMBLE_PREDICTIONS_FILE, members, classes)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    _write_predictions(out_dir / PREDICTIONS_FILE, results, classes)
    _write_fold_log(out_dir / FOLD_LOG_FILE, results)
    from fr_mer.selection_audit import write_selection_audit

    audit = write_selection_audit(out_dir, results, model=config.model, protocol=config.protocol,
                                  database=config.database, seeds=seeds, classes=classes,
                                  scopes=[s for s in scopes if config.protocol != "loso" or s == FULL_SCOPE])
    (out_dir / SUMMARY_FILE).write_text(_markdown(metrics, scopes, config) + audit)
    for scope in scopes:
        database = None if scope == FULL_SCOPE else scope
        _confusion_png(out_dir / f"confusion_{scope}.png", results, database, scope, config.model, classes)
    return metrics


def ensemble_predictions(results: Sequence[FoldResult]) -> list[FoldResult]:
    """One result per fold whose probabilities are the mean of every seed's for that fold.

    The seeds of a fold predict the same samples in the same order; ``seed`` is -1 in the members.
    """
    by_fold: dict[tuple[str, str], list[FoldResult]] = {}
    for result in results:
        by_fold.setdefault((result.database, result.subject), []).append(result)
    members = []
    for runs in by_fold.values():
        first = runs[0]
        if any(r.keys != first.keys for r in runs):
            raise ValueError(f"fold {first.database}/{first.subject}: the seeds predicted different samples")
        proba = np.mean([np.asarray(r.proba, dtype=np.float64) for r in runs], axis=0)
        members.append(dataclasses.replace(
            first, seed=-1, pred=proba.argmax(1).tolist(), proba=np.round(proba, 6).tolist(),
            seconds=sum(r.seconds for r in runs)))
    return members


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}


def _fold_machines(results: Sequence[FoldResult]) -> list[dict[str, object]]:
    """Where the folds were trained: each (device, torch threads) with its number of folds."""
    counts: dict[tuple[object, object], int] = {}
    for result in results:
        key = (result.device, result.torch_threads)
        counts[key] = counts.get(key, 0) + 1
    return [{"device": d, "torch_threads": n, "folds": c} for (d, n), c in counts.items()]


def _write_predictions(path: Path, results, classes: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*PREDICTION_COLUMNS, *[f"{PROBABILITY_PREFIX}{c}" for c in classes]])
        for r in results:
            for key, t, p, probs in zip(r.keys, r.true, r.pred, r.proba):
                # the sample's own subject (a fold that holds out a database holds many)
                subject = key_subject(key)
                writer.writerow([key, subject, r.database, classes[t], classes[p], r.seed,
                                 *[f"{x:.4f}" for x in probs]])


def _write_fold_log(path: Path, results) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seed", "database", "subject", "n_train", "n_test", "correct", "seconds",
                         "train_loss", "samples_per_second", "val_uf1"])
        for r in results:
            correct = sum(int(t == p) for t, p in zip(r.true, r.pred))
            writer.writerow([r.seed, r.database, r.subject, r.n_train, len(r.true), correct,
                             f"{r.seconds:.2f}", f"{r.train_loss:.4f}", f"{r.samples_per_second:.0f}",
                             "" if r.val_uf1 is None else f"{r.val_uf1:.4f}"])


def _markdown(metrics: dict, scopes, config) -> str:
    title = f"{config.model} — {config.protocol}" + (f" ({config.database})" if config.database else "")
    space = metrics["label_space"]
    lines = [f"# {title}", "",
             f"{metrics['n_samples']} samples, {metrics['n_folds']} folds, seeds {metrics['seeds']}, "
             f"classes {', '.join(space['classes'])} ({space['name']})"
             + (f", released weights from {metrics['weights']}" if metrics["weights"] else ""), "",
             "| scope | n | UF1 (mean ± sd) | UAR (mean ± sd) | per-seed UF1 |", "|---|---|---|---|---|"]
    for scope in scopes:
        m = metrics.get(scope)
        if not m:
            continue
        per_seed = ", ".join(f"{v['uf1']:.4f}" for v in m["per_seed"].values())
        lines.append(f"| {scope} | {m['n']} | {mean_sd_text(m['uf1'], m['uf1_std'])} | "
                     f"{mean_sd_text(m['uar'], m['uar_std'])} | {per_seed} |")
    if metrics["missing_samples"]:
        lines += ["", f"{len(metrics['missing_samples'])} protocol samples were missing from the cache: "
                  + ", ".join(metrics["missing_samples"][:10])]
    if metrics.get("missing_subjects"):
        lines += ["", f"Subjects of the protocol's list with no sample in the cache, so without a fold (not "
                  f"evaluated): {', '.join(metrics['missing_subjects'])}"]
    if "ensemble" in metrics:
        lines += ["", f"Ensemble of seeds {metrics['ensemble']['seeds']} (mean of their probabilities per "
                  "sample; not a single-seed figure):", "", "| scope | n | UF1 | UAR |", "|---|---|---|---|"]
        lines += [f"| {scope} | {m['n']} | {m['uf1']:.4f} | {m['uar']:.4f} |"
                  for scope, m in metrics["ensemble"].items() if scope != "seeds"]
    if "selection" in metrics:
        from fr_mer.selection import selection_markdown

        lines += selection_markdown(metrics["selection"])
    machines = metrics["environment"]["folds_ran_on"]
    if len(machines) > 1:
        lines += ["", "The folds of this run were trained on more than one device or thread count (a resumed "
                  "run): " + "; ".join(f"{m['folds']} on {m['device']} with {m['torch_threads']} threads"
                                       for m in machines) + "."]
    lines += ["", f"Training time (sum over folds and seeds): {metrics['train_seconds_total']:.0f} s.", ""]
    return "\n".join(lines)


def _confusion_png(path: Path, results, database, scope: str, model: str, classes: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true = [t for r in results if database in (None, r.database) for t in r.true]
    pred = [p for r in results if database in (None, r.database) for p in r.pred]
    matrix = confusion_matrix(true, pred, len(classes))
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{model}: {scope} (all seeds pooled)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    np.savetxt(path.with_suffix(".csv"), matrix, fmt="%d", delimiter=",")
