"""Nested model selection (``fr-mer evaluate --select FILE``): choose per outer fold, on its training subjects.

A select file (JSON, :func:`read_select_file`) holds a small grid of recipe values
(any field of :class:`~fr_mer.models.base.Recipe`) and model options (``-o``
options, validated against the model's constructor), and the number of inner
folds::

    {"recipe": {"epochs": [20, 40], "lr": [0.001, 0.0001]},
     "options": {"dropout": [0.0, 0.5]},
     "inner_folds": 3}

The candidates are the grid's cartesian product, in file order (the last key
varies fastest), at most :data:`MAX_CANDIDATES`. For each outer (seed, fold),
:func:`score_candidates` splits that fold's TRAINING rows by subject
(scikit-learn's ``StratifiedGroupKFold``) into ``inner_folds`` inner folds;
every candidate is trained on each inner training side and predicts the inner
validation side once, and its score is the UF1 of its inner predictions pooled
over the inner folds. The best candidate (ties: the earlier one in file order)
is then trained on the fold's training subjects as a plain run trains them, with
the same fold seed, and predicts the held-out subject once
(:func:`train_selected`). The held-out subject is never read before that.

Randomness: the inner split and each inner fit draw from seeds derived from the
fold seed and :data:`~fr_mer.randomness.SELECT_STREAM` (the split:
``derive_seed(fold_seed, SELECT_STREAM)``; inner fold k:
``derive_seed(fold_seed, SELECT_STREAM, k)``). Every candidate of an inner fold
trains from the same seed, so candidates differ by their settings alone.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from fr_mer.config import to_record
from fr_mer.data import DeviceDataset
from fr_mer.metrics import uf1
from fr_mer.randomness import SELECT_STREAM, derive_seed
from fr_mer.results_folder import FoldResult
from fr_mer.run_plan import FoldJob, RunPlan
from fr_mer.selection_grid import Candidate, FoldSelection, SelectionError
from fr_mer.training import check_classes_present, predict_proba, train_model


def candidate_plan(plan: RunPlan, candidate: Candidate) -> RunPlan:
    """The run's plan with the candidate's recipe and options (and nothing more to select)."""
    return dataclasses.replace(plan, options=dict(candidate.options), recipe=candidate.recipe, candidates=())


def inner_model(plan: RunPlan, data: DeviceDataset, seed: int):
    """A fresh model for one inner fit, on the data's device: the one place inner models are built.

    ``plan`` is a candidate's (:func:`candidate_plan`). What the model fits of its
    inputs it fits in the training functions, on the inner training rows only
    (:meth:`~fr_mer.models.MERModel.fit_inputs`).
    """
    return plan.build_model(seed).to(data.device)


def inner_splits(data: DeviceDataset, job: FoldJob, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(inner train rows, inner validation rows)`` per inner fold of the job's training subjects.

    Grouped by (database, subject), stratified by class as far as the subjects
    allow (``StratifiedGroupKFold``), shuffled with ``derive_seed(fold seed, SELECT_STREAM)``.
    Only the fold's training rows are looked at.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    rows = np.asarray(job.fold.train_index, dtype=np.int64)
    groups = np.array([f"{data.databases[i]}/{data.subjects[i]}" for i in rows])
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise SelectionError(f"fold {job.fold.subject}: {n_groups} training subjects, fewer than the select "
                             f"file's inner_folds ({n_splits}); give a smaller inner_folds")
    labels = data.labels[torch.as_tensor(rows, device=data.device)].cpu().numpy()
    split = StratifiedGroupKFold(n_splits=n_splits, shuffle=True,
                                 random_state=derive_seed(job.fold_seed, SELECT_STREAM))
    return [(rows[train], rows[val]) for train, val in split.split(np.zeros(len(rows)), labels, groups)]


@dataclasses.dataclass
class _InnerFit:
    job: int  # position in the chunk
    k: int  # inner fold
    train: np.ndarray
    val: np.ndarray
    seed: int


def score_candidates(plan: RunPlan, data: DeviceDataset, jobs: Sequence[FoldJob]) -> list[FoldSelection]:
    """Every candidate's pooled inner UF1 per job, and the choice (ties: the earlier candidate).

    With ``plan.stack`` 1 each inner fit trains alone (:func:`~fr_mer.training.train_model`);
    otherwise each candidate's inner fits of the chunk train as stacks of at most
    ``len(jobs)`` fits (:func:`~fr_mer.fold_stack.train_stacked`), the size of the run's own stacks.
    """
    start = time.perf_counter()
    n_splits = plan.config.select.inner_folds
    fits = []
    for position, job in enumerate(jobs):
        for k, (train, val) in enumerate(inner_splits(data, job, n_splits)):
            check_classes_present(data.labels, torch.as_tensor(train, device=data.device), plan.label_space.n_classes,
                                  f"inner fold {k} of fold {job.fold.subject} (seed {job.seed})")
            fits.append(_InnerFit(position, k, train, val, derive_seed(job.fold_seed, SELECT_STREAM, k)))
    scores = np.zeros((len(jobs), len(plan.candidates)))
    for candidate in plan.candidates:
        cplan = candidate_plan(plan, candidate)
        predicted = _inner_predictions(cplan, data, jobs, fits, candidate.index)
        for position in range(len(jobs)):
            mine = [(fit, pred) for fit, pred in zip(fits, predicted) if fit.job == position]
            true = np.concatenate([data.labels[torch.as_tensor(fit.val, device=data.device)].cpu().numpy()
                                   for fit, _ in mine])
            scores[position, candidate.index] = uf1(true, np.concatenate([pred for _, pred in mine]),
                                                    plan.label_space.n_classes)
    seconds = (time.perf_counter() - start) / max(len(jobs), 1)
    selections = []
    for row in scores:
        chosen = int(np.argmax(row))  # the first of the best: a tie keeps the earlier candidate
        selections.append(FoldSelection(chosen=chosen, candidate=plan.candidates[chosen].record(),
                                        inner_uf1=[round(float(s), 6) for s in row], inner_folds=n_splits,
                                        seconds=seconds))
    return selections


def _inner_predictions(cplan: RunPlan, data: DeviceDataset, jobs: Sequence[FoldJob], fits: Sequence[_InnerFit],
                       candidate: int) -> list[np.ndarray]:
    """Each inner fit's predicted classes on its inner validation rows, trained with the candidate's plan."""
    models = [inner_model(cplan, data, fit.seed) for fit in fits]
    if cplan.stack == 1:
        for model, fit in zip(models, fits):
            train_model(model, data, torch.as_tensor(fit.train), cplan.recipe, seed=fit.seed)
    else:
        from fr_mer.fold_stack import train_stacked

        size = len(jobs)
        for begin in range(0, len(fits), size):
            group = fits[begin:begin + size]
            stack_seed = derive_seed(jobs[0].seed, SELECT_STREAM, candidate,
                                     *(n for fit in group for n in (jobs[fit.job].index, fit.k)))
            train_stacked(models[begin:begin + size], data, [fit.train for fit in group], cplan.recipe,
                          seed=stack_seed, fold_seeds=[fit.seed for fit in group])
    return [predict_proba(model, data, torch.as_tensor(fit.val)).argmax(1).cpu().numpy()
            for model, fit in zip(models, fits)]


def train_selected(plan: RunPlan, data: DeviceDataset, jobs: Sequence[FoldJob],
                   fit: Callable[[RunPlan, DeviceDataset, Sequence[FoldJob]], list[FoldResult]]
                   ) -> list[FoldResult]:
    """Select per job (:func:`score_candidates`), then ``fit`` each chosen candidate's jobs with its plan.

    ``fit(plan, data, jobs)`` is the plain run's training of a chunk (one fold, or one
    stack): the jobs that chose the same candidate train together, in their order;
    each result records its selection and counts the inner fits' time in its seconds.
    """
    selections = score_candidates(plan, data, jobs)
    results: dict[int, FoldResult] = {}
    for candidate in plan.candidates:
        group = [position for position, s in enumerate(selections) if s.chosen == candidate.index]
        if not group:
            continue
        trained = fit(candidate_plan(plan, candidate), data, [jobs[p] for p in group])
        for position, result in zip(group, trained):
            selection = selections[position]
            results[position] = dataclasses.replace(result, selection=selection,
                                                    seconds=result.seconds + selection.seconds)
    return [results[position] for position in range(len(jobs))]


# -- reports (fr_mer.report) ------------------------------------------------------------

def selection_metrics(plan: RunPlan, results: Sequence[FoldResult]) -> dict[str, object]:
    """``metrics.json``'s ``selection``: the grid, each candidate with how often it was chosen, every fold's choice."""
    chosen = [r.selection for r in results if r.selection is not None]
    grid = plan.config.select
    candidates = []
    for candidate in plan.candidates:
        inner = [s.inner_uf1[candidate.index] for s in chosen]
        candidates.append({"index": candidate.index, **candidate.record(),
                           "chosen": sum(s.chosen == candidate.index for s in chosen),
                           "mean_inner_uf1": round(statistics.fmean(inner), 4) if inner else None})
    return {
        "grid": to_record(grid),
        "inner_folds": grid.inner_folds,
        "fits_per_fold": len(plan.candidates) * grid.inner_folds + 1,
        "candidates": candidates,
        "folds": [{"seed": r.seed, "database": r.database, "subject": r.subject, "chosen": r.selection.chosen,
                   "inner_uf1": r.selection.inner_uf1} for r in results if r.selection is not None],
    }


def selection_markdown(selection: Mapping[str, Any]) -> list[str]:
    """The Markdown report's lines for :func:`selection_metrics`'s record."""
    lines = ["", f"Nested selection: {len(selection['candidates'])} candidates, chosen per fold on "
             f"{selection['inner_folds']} inner folds of its training subjects ({selection['fits_per_fold']} fits "
             "per fold); the held-out subject was predicted once, by the chosen candidate retrained.", "",
             "| candidate | settings | times chosen | mean inner UF1 |", "|---|---|---|---|"]
    for c in selection["candidates"]:
        settings_text = ", ".join(f"{k}={v}" for k, v in {**c["recipe"], **c["options"]}.items())
        mean = "" if c["mean_inner_uf1"] is None else f"{c['mean_inner_uf1']:.4f}"
        lines.append(f"| {c['index']} | {settings_text} | {c['chosen']} | {mean} |")
    lines += ["", "| seed | fold | chosen | inner UF1 per candidate |", "|---|---|---|---|"]
    lines += [f"| {f['seed']} | {f['database']}/{f['subject']} | {f['chosen']} | "
              + ", ".join(f"{u:.4f}" for u in f["inner_uf1"]) + " |" for f in selection["folds"]]
    return lines
