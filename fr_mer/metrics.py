"""UF1 and UAR as the MEGC2019 composite protocol defines them (specs/protocol.md).

Both are computed on pooled predictions: per class c, TP_c, FP_c and FN_c are
counted over all samples, F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c) and
Recall_c = TP_c / N_c; UF1 and UAR are the unweighted means over classes.
Averaging per-fold scores instead is a different (wrong) metric.
"""
from __future__ import annotations

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
