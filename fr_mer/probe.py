"""The linear probe: how much class signal a cache's model inputs hold, independent of any network.

For each fold of a protocol, a logistic regression (scikit-learn) is fitted on the flattened
inputs of the training subjects, standardised with the training subjects' own statistics, and
predicts the held-out subject once. The pooled predictions are scored like a model's (UF1/UAR).
It is the standard diagnostic of preprocessing: a pipeline whose inputs a linear model cannot
decode leaves little for a network either.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from fr_mer.errors import ParameterError

#: The probe's regularisation default: strong (C = 0.05) because a fold has a few hundred
#: samples and thousands of input values.
DEFAULT_C = 0.05


@dataclasses.dataclass(frozen=True)
class ProbeFold:
    """One held-out subject's probe predictions."""

    database: str
    subject: str
    keys: list[str]
    true: list[int]
    pred: list[int]
    proba: list[list[float]]
    n_train: int
    seconds: float


def probe_classifier(C: float = DEFAULT_C, class_weight: str | None = "balanced"):
    """The probe: standardisation then L2 logistic regression (lbfgs, multinomial).

    ``class_weight="balanced"`` weighs classes inversely to their training frequency, because
    UF1 and UAR weigh every class equally.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not C > 0:
        raise ParameterError(f"probe C must be > 0, got {C}")
    if class_weight not in (None, "balanced"):
        raise ParameterError(f"probe class weight must be 'balanced' or None, got {class_weight!r}")
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight=class_weight, max_iter=5000))


def probe_folds(features: np.ndarray, labels: np.ndarray, keys: Sequence[str], folds, n_classes: int, *,
                C: float = DEFAULT_C, class_weight: str | None = "balanced") -> list[ProbeFold]:
    """Fit and predict each fold of ``folds`` (:class:`fr_mer.protocols.Fold`) on (N, D) features.

    ``proba`` has one column per class of the label space (a class absent from a fold's training
    subjects gets probability 0 there).
    """
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    labels = np.asarray(labels, dtype=np.int64)
    results = []
    for fold in folds:
        start = time.perf_counter()
        classifier = probe_classifier(C, class_weight)
        classifier.fit(features[fold.train_index], labels[fold.train_index])
        known = classifier.classes_
        proba = np.zeros((len(fold.test_index), n_classes))
        proba[:, known] = classifier.predict_proba(features[fold.test_index])
        results.append(ProbeFold(
            database=fold.database, subject=fold.name, keys=[keys[i] for i in fold.test_index],
            true=labels[fold.test_index].tolist(), pred=proba.argmax(1).tolist(),
            proba=np.round(proba, 6).tolist(), n_train=int(len(fold.train_index)),
            seconds=time.perf_counter() - start))
    return results
