"""Evaluation of a protocol (subject or database folds): folds x seeds, pooled metrics, resumable.

The run follows one path: :func:`~fr_mer.run_plan.make_plan` resolves the
config (nothing loaded yet) -> :func:`load_plan_data` reads the cache ->
:func:`plan_folds` builds the folds -> each (seed, fold) is trained and
predicted (:func:`run_fold`, or :func:`run_fold_stack` for stacked folds) ->
:func:`fr_mer.report.write_reports`. Every stage takes the plan.

For each seed and each fold, a fresh model, initialised from the fold's seed
(:mod:`fr_mer.randomness`), is trained on the other subjects and predicts the
held-out one once; nothing else looks at the held-out subject but the opt-in
``--audit-selection`` log, used for its own report only (:mod:`fr_mer.selection_audit`).
Each finished fold is written to ``OUT/folds/seed<S>/<database>-<subject>.json`` atomically
(:mod:`fr_mer.results_folder`), so an interrupted run resumes at the first
unfinished fold. Metrics are computed on the pooled predictions of all folds
(per seed), then summarised as mean and standard deviation over seeds
(:mod:`fr_mer.report`). With ``jobs`` > 1, or a ``scheduler``, the unfinished
(seed, fold) chunks are tasks (:func:`train_chunk`) of local worker processes or of
a dask cluster, whose workers write the same fold files (:mod:`fr_mer.fold_dispatch`).
With a select grid (``--select``), each chunk first chooses per fold among the
grid's candidates on inner folds of its training subjects
(:func:`fr_mer.selection.train_selected`), on either path.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from fr_mer.data import DeviceDataset, load_dataset, resolve_device
from fr_mer.environment import device_name
from fr_mer.epoch_archive import EpochLog
from fr_mer.fold_dispatch import default_jobs, trained_elsewhere
from fr_mer.metrics import uf1
from fr_mer.limits import MAX_JOBS, MAX_THREADS, check_number
from fr_mer.models.flow_input import MINMAX255
from fr_mer.protocols import Fold, checked_folds, validation_split
from fr_mer.randomness import STACK_STREAM, derive_seed
from fr_mer.results_folder import FoldResult, ResultsFolder
from fr_mer.run_plan import EvalConfig, EvaluationError, FoldJob, RunPlan, make_plan
from fr_mer.selection_audit import EpochRecorder, audited, check_finished_folds_logged, write_log
from fr_mer.state_dicts import load_into, read_state_dict
from fr_mer.training import check_classes_present, predict_proba, train_model

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

__all__ = ["EvalConfig", "EvaluationError", "FoldResult", "load_plan_data", "plan_folds", "run_evaluation",
           "run_fold", "run_fold_stack"]


def load_plan_data(plan: RunPlan, device: torch.device) -> DeviceDataset:
    """The protocol's samples, the model's inputs only, on ``device``."""
    return load_dataset(plan.cache, plan.inputs, device, protocol=plan.config.protocol,
                        database=plan.config.database, composite_list=plan.composite_list,
                        label_space=plan.label_space)


def plan_folds(data: DeviceDataset) -> list[Fold]:
    """The protocol's folds of the loaded samples, checked: nothing held out is trained on."""
    return checked_folds(data.protocol, data.databases, data.subjects)


def check_plan_inputs(plan: RunPlan, data: DeviceDataset) -> None:
    """Refuse, before anything is written, a model whose options do not fit how the cache stores its inputs.

    An explicit 0..255 ``normalise`` on a raw cache is the model's own refusal
    (:meth:`~fr_mer.models.MERModel.check_options`, on the options: no model is built). Released weights (``--weights``)
    are loaded with nothing fitted, so they need the minmax255 images they were trained on.
    """
    plan.model_class.check_options(plan.options, data.flow_normalisation, str(plan.cache))
    if plan.weights_dir is not None and "flow" in plan.inputs and data.flow_normalisation != MINMAX255:
        raise EvaluationError(
            f"{plan.cache}: stores raw flow (--normalisation {data.flow_normalisation}); --weights loads weights "
            "trained on per-sample 0..255 images (STSTNet's released ones) with nothing fitted: use a cache made "
            "with `fr-mer preprocess --normalisation minmax255` or `fr-mer import-ststnet`")


def _fold_model(plan: RunPlan, data: DeviceDataset, job: FoldJob):
    """The fold's freshly initialised model and its (training, validation) rows."""
    model = plan.build_model(job.fold_seed).to(data.device)
    train_index, val_index = job.fold.train_index, None
    if plan.config.val_fraction > 0 and plan.weights_dir is None:
        train_index, val_index = validation_split(
            train_index, data.databases, data.subjects, plan.config.val_fraction, job.fold_seed)
        # the cause named: the subjects --val-fraction held out took a class's every sample
        check_classes_present(
            data.labels, torch.as_tensor(train_index), model.n_classes,
            f"--val-fraction {plan.config.val_fraction}: fold {job.fold.database}/{job.fold.name} of seed {job.seed}, "
            f"its training subjects without the {len(np.unique(data.subjects[val_index]))} held out for validation,",
            remedy="lower --val-fraction (or 0)")
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
        samples_per_second=rate, val_uf1=val_uf1, device=device_name(device), torch_threads=torch.get_num_threads(),
        inputs=model.input_record() or None,
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


def run_fold(plan: RunPlan, data: DeviceDataset, job: FoldJob, *,
             audit_logs: list[EpochLog] | None = None) -> FoldResult:
    """Train on the fold's training subjects (or load its released weights) and predict the held-out one.

    ``audit_logs`` (``--audit-selection``): a list that receives the fold's
    :class:`~fr_mer.epoch_archive.EpochLog`, the held-out subject's predictions after
    every epoch, which change nothing of the training or the result.
    """
    model, train_index, val_index = _fold_model(plan, data, job)
    start = time.perf_counter()
    loss = rate = float("nan")
    recorder = None
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
        recorder = EpochRecorder(model, data, job.fold.test_index) if audit_logs is not None else None
        log = train_model(model, data, torch.as_tensor(train_index), plan.recipe, seed=job.fold_seed,
                          on_epoch=recorder)
        loss, rate = log.final_loss, log.samples_per_second
    result = _predict_fold(data, job, model, train_index, val_index, time.perf_counter() - start, loss, rate)
    if recorder is not None:
        audit_logs.append(recorder.log(result))
    return result


def run_evaluation(cache_path: str | Path, out_dir: str | Path, config: EvalConfig, *,
                   device: torch.device | str, overwrite: bool = False, from_end: bool = False,
                   on_start: Callable[[int], None] | None = None,
                   on_fold: Callable[[FoldResult, bool], None] | None = None,
                   scheduler: "str | Client | None" = None, ensemble: bool = False,
                   audit_selection: bool = False, jobs: int | None = 1, threads: int | None = None) -> dict:
    """Run (or resume) every seed x fold; returns the metrics written to ``metrics.json``.

    ``ensemble`` also reports the seeds' ensemble (:func:`fr_mer.report.write_reports`).
    ``audit_selection`` logs each fold's held-out predictions after every epoch and reports
    what epoch selection on them would have given (:mod:`fr_mer.selection_audit`); the
    metrics are the same. Not a recorded setting; a resumed run with it needs every
    finished fold's log.

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

    ``jobs`` > 1 trains the unfinished chunks in that many worker processes at once, each with
    ``threads`` torch threads (default: the usable cores divided among them), capped by the
    chunks; 1 (the default) trains them in this process, with its own threads; None chooses
    (:func:`fr_mer.fold_dispatch.default_jobs`, as ``fr-mer evaluate`` does). ``scheduler`` (a
    ``dask.distributed`` address or client) trains them on the cluster's workers, on ``device``
    as each worker resolves it ("auto": its own GPU if it has one); this process then reads the
    cache on the CPU for the folds and the reports. Either way the workers write the fold files
    and this process reads them back (:mod:`fr_mer.fold_dispatch`); the figures are those of one
    process with the same threads per fold.
    """
    from fr_mer import report

    if jobs is not None:
        check_number("jobs (--jobs)", jobs, low=1, high=MAX_JOBS, integer=True)
    if threads is not None:
        check_number("threads (--threads)", threads, low=1, high=MAX_THREADS, integer=True)
    if scheduler is not None and jobs not in (None, 1):
        raise EvaluationError(f"jobs (--jobs) {jobs} with a scheduler: the cluster's workers train the folds; "
                              "give one of the two")
    plan = make_plan(config, cache_path)
    if audit_selection:
        plan = audited(plan)
    folder = ResultsFolder(out_dir)
    # Trained elsewhere, the folds need the data here only for the folds and the reports.
    elsewhere = scheduler is not None or (jobs is not None and jobs > 1)
    data = load_plan_data(plan, torch.device("cpu") if elsewhere else resolve_device(device))
    check_plan_inputs(plan, data)
    folder.check_or_write_config(plan, overwrite)
    folds = plan_folds(data)
    tasks = plan.jobs(folds)  # every (seed, fold), in run order
    if plan.audit_selection:
        check_finished_folds_logged(folder, tasks)
    if on_start is not None:
        on_start(len(tasks))
    started = time.perf_counter()
    results: dict[tuple[int, int], FoldResult] = {}
    chunks = _chunks(list(reversed(tasks)) if from_end else tasks, plan.stack or len(folds))
    processes = 1 if scheduler is not None else min(len(chunks), jobs or default_jobs(data.device.type, plan))
    if scheduler is not None or processes > 1:
        for job, result, resumed in trained_elsewhere(train_chunk, chunks, plan, folder, str(device),
                                                      scheduler=scheduler, jobs=processes, threads=threads):
            results[job.seed, job.index] = result
            if on_fold is not None:
                on_fold(result, resumed)
        chunks = []
    for chunk in chunks:
        finished, pending = folder.finished_and_pending(chunk)
        for job, result in finished:
            results[job.seed, job.index] = result
            if on_fold is not None:
                on_fold(result, True)
        if not pending:
            continue
        for job, result in zip(pending, _train_and_write(plan, data, folder, pending)):
            results[job.seed, job.index] = result
            if on_fold is not None:
                on_fold(result, False)
    wall = time.perf_counter() - started
    in_order = [results[job.seed, job.index] for job in tasks]
    return report.write_reports(folder.path, plan, data, folds, in_order, wall, ensemble=ensemble)


def _train_and_write(plan: RunPlan, data: DeviceDataset, folder: ResultsFolder,
                     pending: Sequence[FoldJob]) -> list[FoldResult]:
    """Train one chunk (one fold, or one stack; with candidates, selected first) and write each fold's file
    (after its audit log, with ``--audit-selection``) as it is kept."""
    audit_logs = [] if plan.audit_selection else None

    def fit(fit_plan: RunPlan, fit_data: DeviceDataset, jobs: Sequence[FoldJob]) -> list[FoldResult]:
        return _train(fit_plan, fit_data, jobs, audit_logs)

    if plan.candidates:
        from fr_mer.selection import train_selected

        trained = train_selected(plan, data, pending, fit)
    else:
        trained = fit(plan, data, pending)
    for log in audit_logs or ():
        write_log(folder, log)
    for job, result in zip(pending, trained):
        folder.write_fold(job, result)
    return trained


def _train(plan: RunPlan, data: DeviceDataset, pending: Sequence[FoldJob],
           audit_logs: list[EpochLog] | None = None) -> list[FoldResult]:
    """A plain run's training of one chunk: one fold (audited if ``audit_logs`` is a list), or one stack."""
    return ([run_fold(plan, data, pending[0], audit_logs=audit_logs)] if plan.stack == 1
            else run_fold_stack(plan, data, pending))


# -- a worker's task (fr_mer.fold_dispatch: local worker processes, or a dask cluster) --------------

#: The last cache a worker process loaded (key, data): its tasks of one run share it.
_worker_data: list[tuple[tuple, DeviceDataset]] = []


def train_chunk(jobs: Sequence[FoldJob], plan: RunPlan, out_dir: Path, device: str) -> list[bool]:
    """A worker's task: train the chunk's unfinished folds and write their files into ``out_dir``.

    Returns, per job, whether it was trained here (False: its file was already
    written, by another process sharing the run). The cache is read once per
    worker process and kept for the run's next tasks.
    """
    folder = ResultsFolder(out_dir)
    unfinished = [folder.read_fold(job) is None for job in jobs]
    pending = [job for job, todo in zip(jobs, unfinished) if todo]
    if pending:
        torch_device = resolve_device(device)
        stat = plan.cache.stat()
        key = (plan.cache, stat.st_mtime_ns, stat.st_size, tuple(sorted(plan.inputs.items())),
               plan.config.protocol, plan.config.database, plan.composite_list, torch_device)
        if not _worker_data or _worker_data[0][0] != key:
            _worker_data[:] = [(key, load_plan_data(plan, torch_device))]
        _train_and_write(plan, _worker_data[0][1], folder, pending)
    return unfinished


def _chunks(jobs: Sequence[FoldJob], size: int) -> list[list[FoldJob]]:
    """Consecutive jobs of one seed, at most ``size`` per chunk (a stack trains one seed's folds)."""
    chunks: list[list[FoldJob]] = []
    for job in jobs:
        if chunks and len(chunks[-1]) < size and chunks[-1][0].seed == job.seed:
            chunks[-1].append(job)
        else:
            chunks.append([job])
    return chunks
