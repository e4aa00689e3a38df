"""The paired statistics of ``fr-mer compare`` (:mod:`fr_mer.compare`), on two runs' predictions of the same
samples over the same seeds: a percentile bootstrap over subjects, McNemar's exact test per seed, and the sign
count of the per-seed differences. docs/comparing.md says what each means.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable, Sequence

import numpy as np

from fr_mer.metrics import uar, uf1
from fr_mer.pipeline.labels import CLASSES

#: The paired metrics, in the order the tables show them.
METRICS: dict[str, Callable[..., float]] = {"uf1": uf1, "uar": uar}

#: Equal confusion matrices give bit-equal scores; this tolerance only absorbs rounding of equal fractions.
TIE_TOLERANCE = 1e-12


def sign_counts(differences: Sequence[float]) -> tuple[int, int, int]:
    """How many per-seed differences A - B are positive, negative and tied (within :data:`TIE_TOLERANCE`)."""
    wins_a = sum(d > TIE_TOLERANCE for d in differences)
    wins_b = sum(d < -TIE_TOLERANCE for d in differences)
    return wins_a, wins_b, len(differences) - wins_a - wins_b


def bootstrap_intervals(true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, folds: np.ndarray,
                        n_bootstrap: int, rng: np.random.Generator,
                        confidence: float = 0.95, n_classes: int = len(CLASSES)) -> dict[str, tuple[float, float]]:
    """Percentile intervals, per metric, of the mean over seeds of A - B, resampling subjects.

    ``pred_a`` and ``pred_b`` are (seeds, samples); ``folds`` names each sample's
    subject. Each resample draws as many subjects as there are, with replacement
    (sorted subject names index the draw), and both runs are scored on the same
    draw, so the interval is paired.
    """
    subjects, position = np.unique(folds, return_inverse=True)
    draws = rng.integers(0, len(subjects), size=(n_bootstrap, len(subjects)))
    means = {name: np.empty(n_bootstrap) for name in METRICS}
    samples = np.arange(len(true))
    for r, draw in enumerate(draws):
        rows = np.repeat(samples, np.bincount(draw, minlength=len(subjects))[position])
        for name, metric in METRICS.items():
            means[name][r] = statistics.fmean(
                metric(true[rows], a[rows], n_classes) - metric(true[rows], b[rows], n_classes)
                for a, b in zip(pred_a, pred_b))
    tail = (1 - confidence) / 2
    return {name: tuple(float(q) for q in np.quantile(m, [tail, 1 - tail])) for name, m in means.items()}


def exact_binomial_p_value(k: int, n: int) -> float:
    """Two-sided exact p-value of ``k`` successes in ``n`` fair trials: twice the smaller tail, at most 1."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_p_value(only_a_correct: int, only_b_correct: int) -> float:
    """McNemar's exact test: under "no difference" each discordant sample goes either way with p = 1/2."""
    n = only_a_correct + only_b_correct
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binomtest
    except ImportError:
        return exact_binomial_p_value(only_a_correct, n)
    return float(binomtest(only_a_correct, n, 0.5).pvalue)
