"""UF1 and UAR as the MEGC2019 composite protocol defines them (specs/protocol.md).

Both are computed on pooled predictions: per class c, TP_c, FP_c and FN_c are
counted over all samples, F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c) and
Recall_c = TP_c / N_c; UF1 and UAR are the unweighted means over classes.
Averaging per-fold scores instead is a different (wrong) metric.

Over seeds (:func:`seed_summary`, ``fr-mer compare``): the mean, and the sample sd
(n - 1) of :func:`sample_sd`; the sd of a single seed is unknown, NaN here and
``null`` in ``metrics.json``, and a table prints the mean alone (:func:`mean_sd_text`).
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

import numpy as np


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes, columns predictions."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape} values, y_pred {y_pred.shape}")
    if y_true.size and (y_true.min() < 0 or y_true.max() >= n_classes or
                        y_pred.min() < 0 or y_pred.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _present_classes(matrix: np.ndarray) -> np.ndarray:
    # A class with no true sample has no recall, and its F1 would be 0/0 (or 0
    # from false positives alone): both metrics average over the classes that
    # occur in the truth. Every database slice of the composite has all three.
    return np.flatnonzero(matrix.sum(axis=1) > 0)


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    tp = np.diag(matrix).astype(float)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    tp = np.diag(matrix).astype(float)
    n = matrix.sum(axis=1).astype(float)
    return np.divide(tp, n, out=np.zeros_like(tp), where=n > 0)


def uf1(y_true, y_pred, n_classes: int = 3) -> float:
    """Unweighted F1: mean of per-class F1 over the classes present in ``y_true``."""
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    present = _present_classes(matrix)
    return float(per_class_f1(matrix)[present].mean()) if present.size else float("nan")


def uar(y_true, y_pred, n_classes: int = 3) -> float:
    """Unweighted average recall over the classes present in ``y_true``."""
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    present = _present_classes(matrix)
    return float(per_class_recall(matrix)[present].mean()) if present.size else float("nan")


def pooled_metrics(results: Sequence, database: str | None = None, n_classes: int = 3) -> dict[str, float]:
    """UF1, UAR and the sample count over the pooled predictions of fold results.

    ``results``: objects with ``database``, ``true`` and ``pred`` (one
    :class:`~fr_mer.evaluation.FoldResult` per fold); ``database`` keeps only
    that database's folds (None: all).
    """
    true = [t for r in results if database in (None, r.database) for t in r.true]
    pred = [p for r in results if database in (None, r.database) for p in r.pred]
    return {"uf1": uf1(true, pred, n_classes), "uar": uar(true, pred, n_classes), "n": len(true)}


def sample_sd(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); NaN for a single value, whose spread is unknown."""
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean: sample sd / sqrt(n); NaN for a single value."""
    return sample_sd(values) / math.sqrt(len(values))


def _known(value: float | None) -> bool:
    return value is not None and value == value


def mean_sd_text(mean: float, spread: float | None, signed: bool = False) -> str:
    """``mean ± spread`` to 4 decimals; the mean alone where the spread is unknown (one seed: NaN or null)."""
    text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    return f"{text} ± {spread:.4f}" if _known(spread) else text


def _mean_and_sd(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), sample_sd(values)


def _rounded_sd(sd: float) -> float | None:
    return round(sd, 4) if _known(sd) else None


def seed_summary(per_seed: dict[str, dict[str, float]]) -> dict[str, object]:
    """One scope's entry of ``metrics.json``: the mean and sd over seeds of each seed's pooled UF1 and
    UAR (``per_seed``: seed -> :func:`pooled_metrics`), the sample count, each seed's.

    The sd is ``None`` (``null``) where fewer than two seeds have a score (module docstring).
    """
    uf1_mean, uf1_std = _mean_and_sd([m["uf1"] for m in per_seed.values()])
    uar_mean, uar_std = _mean_and_sd([m["uar"] for m in per_seed.values()])
    return {
        "uf1": round(uf1_mean, 4), "uar": round(uar_mean, 4),
        "uf1_std": _rounded_sd(uf1_std), "uar_std": _rounded_sd(uar_std),
        "n": next(iter(per_seed.values()))["n"],
        "per_seed": {s: {"uf1": round(m["uf1"], 4), "uar": round(m["uar"], 4)} for s, m in per_seed.items()},
    }
