"""Evaluation of a protocol (subject or database folds): folds x seeds, pooled metrics, resumable.

The run follows one path: :func:`~fr_mer.run_plan.make_plan` resolves the
config (nothing loaded yet) -> :func:`load_plan_data` reads the cache ->
:func:`plan_folds` builds the folds -> each (seed, fold) is trained and
predicted (:func:`run_fold`, or :func:`run_fold_stack` for stacked folds) ->
:func:`fr_mer.report.write_reports`. Every stage takes the plan.

For each seed and each fold, a fresh model, initialised from the fold's seed
(:mod:`fr_mer.randomness`), is trained on the other subjects and predicts the
held-out one once; nothing else looks at the held-out subject. Each finished
fold is written to ``OUT/folds/seed<S>/<database>-<subject>.json`` atomically
(:mod:`fr_mer.results_folder`), so an interrupted run resumes at the first
unfinished fold. Metrics are computed on the pooled predictions of all folds
(per seed), then summarised as mean and standard deviation over seeds
(:mod:`fr_mer.report`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fr_mer.data import DeviceDataset, load_dataset
from fr_mer.metrics import uf1
from fr_mer.protocols import Fold, fold_leak, protocol_folds, validation_split
from fr_mer.randomness import STACK_STREAM, derive_seed
from fr_mer.results_folder import FoldResult, ResultsFolder
from fr_mer.run_plan import EvalConfig, EvaluationError, FoldJob, RunPlan, make_plan
from fr_mer.state_dicts import load_into, read_state_dict
from fr_mer.training import predict_proba, train_model

__all__ = ["EvalConfig", "EvaluationError", "FoldResult", "load_plan_data", "plan_folds", "run_evaluation",
           "run_fold", "run_fold_stack"]


def load_plan_data(plan: RunPlan, device: torch.device) -> DeviceDataset:
    """The protocol's samples, the model's inputs only, on ``device``."""
    return load_dataset(plan.cache, plan.inputs, device, protocol=plan.config.protocol,
                        database=plan.config.database, composite_list=plan.composite_list,
                        label_space=plan.label_space)


def plan_folds(data: DeviceDataset) -> list[Fold]:
    """The protocol's folds of the loaded samples, checked: nothing held out is trained on."""
    folds = protocol_folds(data.protocol, data.databases, data.subjects)
    for fold in folds:
        leak = fold_leak(fold, data.databases, data.subjects)
        if leak is not None:
            raise EvaluationError(f"fold {fold.subject}: held-out side leaks into training ({leak})")
    return folds


def _fold_model(plan: RunPlan, data: DeviceDataset, job: FoldJob):
    """The fold's freshly initialised model and its (training, validation) rows."""
    model = plan.build_model(job.fold_seed).to(data.device)
    train_index, val_index = job.fold.train_index, None
    if plan.config.val_fraction > 0 and plan.weights_dir is None:
        train_index, val_index = validation_split(
            train_index, data.databases, data.subjects, plan.config.val_fraction, job.fold_seed)
    return model, train_index, val_index


def _predict_fold(data: DeviceDataset, job: FoldJob, model, train_index, val_index, seconds: float,
                  loss: float, rate: float) -> FoldResult:
    """The one look at the held-out subject, after training; and the validation score, if any."""
    device = data.device
    fold = job.fold
    start = time.perf_counter()
    val_uf1 = None
    if val_index is not None and len(val_index):
        val_pred = predict_proba(model, data, torch.as_tensor(val_index)).argmax(1).cpu().numpy()
        val_uf1 = uf1(data.labels[torch.as_tensor(val_index, device=device)].cpu().numpy(), val_pred,
                      data.label_space.n_classes)
    proba = predict_proba(model, data, torch.as_tensor(fold.test_index)).cpu().numpy()
    seconds += time.perf_counter() - start
    true = data.labels[torch.as_tensor(fold.test_index, device=device)].cpu().numpy()
    return FoldResult(
        seed=job.seed, database=fold.database, subject=fold.name,
        keys=[data.keys[i] for i in fold.test_index],
        true=true.tolist(), pred=proba.argmax(1).tolist(), proba=np.round(proba, 6).tolist(),
        n_train=int(len(train_index)), seconds=seconds, train_loss=loss,
        samples_per_second=rate, val_uf1=val_uf1,
    )


def run_fold_stack(plan: RunPlan, data: DeviceDataset, jobs: Sequence[FoldJob]) -> list[FoldResult]:
    """Train the folds of ``jobs`` (one seed) as one stacked model.

    Each fold's network starts from the same initialisation as in
    :func:`run_fold`. Through the generic stack (:mod:`fr_mer.func_stack`) each
    fold also draws its batches and dropout from its own fold seed, so it
    trains as :func:`run_fold` would; the hand-written STSTNet stack draws them
    from one stream derived from the run seed and the folds (:mod:`fr_mer.fold_stack`).
    """
    from fr_mer.fold_stack import train_stacked

    built = [_fold_model(plan, data, job) for job in jobs]
    stack_seed = derive_seed(jobs[0].seed, STACK_STREAM, *(job.index for job in jobs))
    logs = train_stacked([m for m, _, _ in built], data, [t for _, t, _ in built], plan.recipe, seed=stack_seed,
                         fold_seeds=[job.fold_seed for job in jobs])
    return [_predict_fold(data, job, model, train_index, val_index, log.seconds, log.final_loss,
                          log.samples_per_second)
            for job, (model, train_index, val_index), log in zip(jobs, built, logs)]


def run_fold(plan: RunPlan, data: DeviceDataset, job: FoldJob) -> FoldResult:
    """Train on the fold's training subjects (or load its released weights) and predict the held-out one."""
    model, train_index, val_index = _fold_model(plan, data, job)
    start = time.perf_counter()
    loss = rate = float("nan")
    if plan.weights_dir is not None:
        weights = plan.weights_dir / f"{job.fold.name}.pth"
        if not weights.is_file():
            raise EvaluationError(
                f"{weights}: no weights for held-out subject {job.fold.subject}; --weights DIR must hold "
                "one state dict per subject, named as STSTNet released them (sub01.pth, s01.pth, 006.pth)"
            )
        load_into(model, weights, read_state_dict(weights, map_location=data.device))
        model.to(data.device)
    else:
        log = train_model(model, data, torch.as_tensor(train_index), plan.recipe, seed=job.fold_seed)
        loss, rate = log.final_loss, log.samples_per_second
    return _predict_fold(data, job, model, train_index, val_index, time.perf_counter() - start, loss, rate)


def run_evaluation(cache_path: str | Path, out_dir: str | Path, config: EvalConfig, *,
                   device: torch.device, overwrite: bool = False, from_end: bool = False,
                   on_start: Callable[[int], None] | None = None,
                   on_fold: Callable[[FoldResult, bool], None] | None = None) -> dict:
    """Run (or resume) every seed x fold; returns the metrics written to ``metrics.json``.

    ``on_start(total_folds)`` is called once the folds are known; ``on_fold(result, resumed)``
    after each fold, with ``resumed`` True for folds read back from an earlier run.
    ``from_end`` works through the seed x fold list from its last entry: a
    second process started so on the same ``out_dir`` shares a run with one
    going forward (each skips the folds already written; at most the fold both
    reach at once is trained twice, with the same result). The reports are the
    same whichever the order.

    ``config.fold_batch`` > 1 (or 0, all) trains that many consecutive folds
    of a seed as one stacked model (:mod:`fr_mer.fold_stack`); the unfinished
    folds of an interrupted chunk are trained again as one, smaller, stack.
    """
    from fr_mer import report

    plan = make_plan(config, cache_path)
    folder = ResultsFolder(out_dir)
    data = load_plan_data(plan, device)
    folder.check_or_write_config(plan, overwrite)
    folds = plan_folds(data)
    jobs = plan.jobs(folds)
    if on_start is not None:
        on_start(len(jobs))
    started = time.perf_counter()
    results: dict[tuple[int, int], FoldResult] = {}
    for chunk in _chunks(list(reversed(jobs)) if from_end else jobs, plan.stack or len(folds)):
        pending = []
        for job in chunk:
            result = folder.read_fold(job)
            if result is None:
                pending.append(job)
                continue
            results[job.seed, job.index] = result
            if on_fold is not None:
                on_fold(result, True)
        if not pending:
            continue
        trained = [run_fold(plan, data, pending[0])] if plan.stack == 1 else run_fold_stack(plan, data, pending)
        for job, result in zip(pending, trained):
            folder.write_fold(job, result)
            results[job.seed, job.index] = result
            if on_fold is not None:
                on_fold(result, False)
    wall = time.perf_counter() - started
    in_order = [results[job.seed, job.index] for job in jobs]
    return report.write_reports(folder.path, plan, data, folds, in_order, wall)


def _chunks(jobs: Sequence[FoldJob], size: int) -> list[list[FoldJob]]:
    """Consecutive jobs of one seed, at most ``size`` per chunk (a stack trains one seed's folds)."""
    chunks: list[list[FoldJob]] = []
    for job in jobs:
        if chunks and len(chunks[-1]) < size and chunks[-1][0].seed == job.seed:
            chunks[-1].append(job)
        else:
            chunks.append([job])
    return chunks
