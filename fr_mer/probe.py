"""The linear probe: how much class signal a cache's model inputs hold, independent of any network.

For each fold of a protocol, a logistic regression (scikit-learn) is fitted on the flattened
inputs of the training subjects, standardised with the training subjects' own statistics, and
predicts the held-out subject once. The pooled predictions are scored like a model's (UF1/UAR)
and written in the reports of ``fr-mer evaluate`` (:func:`fr_mer.report.write_reports`:
metrics.json, predictions.csv, folds.csv, summary.md). It is the standard diagnostic of
preprocessing: a pipeline whose inputs a linear model cannot decode leaves little for a network
either. Deterministic: lbfgs has no random state, so the probe has no seeds (it is recorded as
seed 0).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fr_mer.config import settings, to_record
from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_JOBS, check_number
from fr_mer.pipeline.labels import COMPOSITE_SPACE, LabelSpace, resolve_label_space
from fr_mer.protocols import checked_folds
from fr_mer.results_folder import CONFIG_FILE, FoldResult, ResultsFolder, atomic_json
from fr_mer.run_plan import check_protocol_choice, loso_database
from fr_mer.workers import TORCH_WORKERS, call_in_worker, threads_per_process, usable_cores, worker_pool

#: The probe's regularisation default: strong (C = 0.05) because a fold has a few hundred
#: samples and thousands of input values.
DEFAULT_C = 0.05

#: The name the probe's reports carry where a model's name stands.
PROBE_NAME = "probe"

FLOW_CHANNELS = ("u", "v", "strain")


@settings
class ProbeConfig:
    """What defines a probe run (recorded in ``config.json`` and, as its recipe, in ``metrics.json``)."""

    protocol: str = "composite"
    database: str | None = None  # loso: None takes the cache's one database
    classes: int | None = None  # loso: the database's class protocol (labels.CLASS_SPACES); None: the protocol's own
    composite_list: str | None = None
    channels: tuple[str, ...] = FLOW_CHANNELS
    C: float = DEFAULT_C
    class_weight: str | None = "balanced"

    def __post_init__(self) -> None:
        check_protocol_choice(self.protocol, self.database, self.classes)
        if not self.channels or len(set(self.channels)) != len(self.channels) \
                or not set(self.channels) <= set(FLOW_CHANNELS):
            raise ParameterError(f"--channels must be distinct names among {','.join(FLOW_CHANNELS)}, "
                                 f"got {','.join(self.channels)}")
        check_classifier_settings(self.C, self.class_weight)


@dataclasses.dataclass(frozen=True)
class ProbePlan:
    """A probe run in the shape the evaluation reports read (``config``, ``recipe``, ``seeds``)."""

    config: "_ReportedConfig"
    recipe: ProbeConfig
    label_space: LabelSpace = COMPOSITE_SPACE
    seeds: tuple[int, ...] = (0,)


@dataclasses.dataclass(frozen=True)
class _ReportedConfig:
    protocol: str
    database: str | None
    model: str = PROBE_NAME
    options: dict = dataclasses.field(default_factory=dict)
    weights_dir: str | None = None


def check_classifier_settings(C: float, class_weight: str | None) -> None:
    """Refuse a C or class weight :func:`probe_classifier` cannot use, without importing scikit-learn (1.2 s
    of CPU): a probe whose folds are fitted in worker processes never imports it in its own."""
    if not (isinstance(C, (int, float)) and C > 0 and math.isfinite(C)):
        raise ParameterError(f"probe C (--C) must be a finite number > 0, got {C}")
    if class_weight not in (None, "balanced"):
        raise ParameterError(f"probe class weight must be 'balanced' or None, got {class_weight!r}")


def probe_classifier(C: float = DEFAULT_C, class_weight: str | None = "balanced"):
    """The probe: standardisation then L2 logistic regression (lbfgs, multinomial).

    ``class_weight="balanced"`` weighs classes inversely to their training frequency, because
    UF1 and UAR weigh every class equally.
    """
    check_classifier_settings(C, class_weight)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight=class_weight, max_iter=5000))


def probe_folds(features: np.ndarray, labels: np.ndarray, keys: Sequence[str], folds, n_classes: int, *,
                C: float = DEFAULT_C, class_weight: str | None = "balanced", jobs: int = 1) -> list[FoldResult]:
    """Fit and predict each fold of ``folds`` (:class:`fr_mer.protocols.Fold`) on (N, D) features.

    ``proba`` has one column per class of the label space (a class absent from a fold's training
    subjects gets probability 0 there). The results are the evaluation's :class:`FoldResult`
    (seed 0; no training loss or rate: NaN), in the order of ``folds``. ``jobs`` > 1 fits the
    folds in that many worker processes at once (:mod:`fr_mer.workers`; the BLAS threads of
    each: the usable cores divided among them).
    """
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    labels = np.asarray(labels, dtype=np.int64)
    if jobs <= 1 or len(folds) <= 1:
        return [_probe_fold(features, labels, keys, fold, n_classes, C, class_weight) for fold in folds]
    from joblib import delayed

    threads, parent = threads_per_process(jobs), os.getpid()
    pool = worker_pool(jobs, threads, len(folds), TORCH_WORKERS)
    done = dict(pool(delayed(call_in_worker)(_probe_fold, threads, parent, index, features, labels, keys, fold,
                                             n_classes, C, class_weight)
                     for index, fold in enumerate(folds)))
    return [done[index] for index in range(len(folds))]


def _probe_fold(features: np.ndarray, labels: np.ndarray, keys: Sequence[str], fold, n_classes: int, C: float,
                class_weight: str | None) -> FoldResult:
    """One fold of :func:`probe_folds`: fitted on its training rows, predicting its held-out subject once."""
    start = time.perf_counter()
    classifier = probe_classifier(C, class_weight)
    classifier.fit(features[fold.train_index], labels[fold.train_index])
    known = classifier.classes_
    proba = np.zeros((len(fold.test_index), n_classes))
    proba[:, known] = classifier.predict_proba(features[fold.test_index])
    return FoldResult(
        seed=0, database=fold.database, subject=fold.name, keys=[keys[i] for i in fold.test_index],
        true=labels[fold.test_index].tolist(), pred=proba.argmax(1).tolist(),
        proba=np.round(proba, 6).tolist(), n_train=int(len(fold.train_index)),
        seconds=time.perf_counter() - start, train_loss=math.nan, samples_per_second=math.nan)


def run_probe(cache_path: str | Path, out_dir: str | Path, config: ProbeConfig, *, jobs: int | None = 1) -> dict:
    """Probe the cache's ``flow`` channels under ``config``'s protocol; returns ``metrics.json``'s content.

    ``jobs``: worker processes fitting folds at once (:func:`probe_folds`), capped by the folds;
    None: every usable core (:func:`fr_mer.workers.usable_cores`). The figures do not depend on it.

    The samples and folds are the evaluation's (:func:`fr_mer.data.load_dataset`,
    :func:`fr_mer.protocols.checked_folds`), so a probe and a model evaluated on one cache
    and protocol see the same samples in the same folds.
    """
    import torch

    from fr_mer import report
    from fr_mer.data import load_dataset

    if jobs is not None:
        check_number("jobs (--jobs)", jobs, low=1, high=MAX_JOBS, integer=True)
    composite_list = Path(config.composite_list).resolve() if config.composite_list else None
    database = loso_database(cache_path, config.protocol, config.database)
    label_space = resolve_label_space(config.protocol, database, config.classes)
    config = dataclasses.replace(config, database=database,
                                 composite_list=str(composite_list) if composite_list else None)
    folder = ResultsFolder(out_dir)
    start = time.perf_counter()
    data = load_dataset(cache_path, {"flow": tuple(config.channels)}, torch.device("cpu"),
                        protocol=config.protocol, database=database, composite_list=composite_list,
                        label_space=label_space)
    folds = checked_folds(data.protocol, data.databases, data.subjects)
    if jobs is None:
        jobs = usable_cores()
    results = probe_folds(data.inputs["flow"].numpy(), data.labels.numpy(), data.keys, folds,
                          data.label_space.n_classes,
                          C=config.C, class_weight=config.class_weight, jobs=min(jobs, len(folds)))
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic_json(folder.path / CONFIG_FILE, {"probe": to_record(config), "cache": str(Path(cache_path).resolve())})
    plan = ProbePlan(config=_ReportedConfig(protocol=config.protocol, database=config.database), recipe=config,
                     label_space=data.label_space)
    return report.write_reports(folder.path, plan, data, folds, results, time.perf_counter() - start)
