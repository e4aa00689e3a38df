"""An evaluation's chunks trained outside its process: on ``--jobs`` local worker processes, or on a dask cluster.

A chunk is one (seed, fold), or one fold stack (:func:`fr_mer.evaluation.run_evaluation`).
Either way each unfinished chunk is one task, ``task(chunk, plan, out, device)``
(:func:`fr_mer.evaluation.train_chunk`, passed in: this module does not import the
evaluation), run by a worker that trains the chunk's unfinished folds and writes their
files into the results folder exactly as a run in one process does (atomically,
:mod:`fr_mer.results_folder`). This process reads each fold back from its file, so
resume, ``--from-end`` and the reports are the same whoever trained it, and a folder
the workers cannot write is an error, not a silent loss.

Local workers (``--jobs N``, :func:`train_in_processes`) are joblib's loky processes,
each with :func:`worker_threads` torch threads (:mod:`fr_mer.workers`: the usable cores
divided among the N, or ``--threads``). At most ``2 N`` tasks are sent ahead; results come
back as they finish. A fold is a pure function of (seed, fold) and the thread count
(:mod:`fr_mer.randomness`), so any N gives the same figures as one process with the same
threads per fold. Ctrl-C, or a worker killed (``kill -9``, out of memory), ends the run
with the fold files written so far, each whole: the same command resumes after them.

On a cluster (``--scheduler``, :func:`train_on_cluster`; :mod:`fr_mer.cluster`), a task
whose worker dies is run again by the scheduler; docs/cluster.md says what the workers must share.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from fr_mer.results_folder import FoldResult, ResultsFolder
from fr_mer.run_plan import EvaluationError, FoldJob, RunPlan
from fr_mer.workers import TORCH_WORKERS, call_in_worker, threads_per_process, usable_cores, worker_pool

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

#: A worker's task: train a chunk's unfinished folds, write their files into ``out``; per job, whether it trained it.
ChunkTask = Callable[[Sequence[FoldJob], RunPlan, Path, str], "list[bool]"]

#: What each chunk's runner yields: the chunk and, per job, whether the worker trained it (False: already written).
Trained = Iterator[tuple[Sequence[FoldJob], Sequence[bool]]]


def default_jobs(device_type: str, plan: RunPlan) -> int:
    """``--jobs`` when it is not given: 1 on CUDA (one GPU; stacked folds keep it busy) and with
    ``--weights`` (nothing to train), else every usable core (:func:`fr_mer.workers.usable_cores`)."""
    if device_type == "cuda" or plan.weights_dir is not None:
        return 1
    return usable_cores()


def worker_threads(jobs: int, threads: int | None) -> int:
    """torch threads of each of ``jobs`` local workers: ``threads`` (``--threads``) or the budget.

    Fixed by the ``jobs`` asked for, not by how many chunks are left, so that a resumed run
    trains its last folds with the threads of its first.
    """
    return threads or threads_per_process(jobs)


def trained_elsewhere(task: ChunkTask, chunks: Sequence[Sequence[FoldJob]], plan: RunPlan, folder: ResultsFolder,
                      device: str, *, scheduler: "str | Client | None" = None, jobs: int = 1,
                      threads: int | None = None) -> Iterator[tuple[FoldJob, FoldResult, bool]]:
    """``(job, result, resumed)`` for every job of ``chunks``: read back, or trained by a worker.

    Folds already in ``folder`` are yielded first (resumed); the other chunks go to the cluster
    at ``scheduler``, else to ``jobs`` local processes of ``threads`` torch threads each
    (:func:`worker_threads`), on ``device`` as each worker resolves it.
    """
    todo = []
    for chunk in chunks:
        finished, pending = folder.finished_and_pending(chunk)
        for job, result in finished:
            yield job, result, True
        if pending:
            todo.append(pending)
    if not todo:
        return
    # Paths the workers resolve alike, whatever their working folder.
    portable = dataclasses.replace(plan, weights_dir=plan.weights_dir.resolve() if plan.weights_dir else None)
    out = folder.path.resolve()
    if scheduler is not None:
        runs = train_on_cluster(task, scheduler, todo, portable, out, device)
    else:
        runs = train_in_processes(task, todo, portable, out, device, jobs, worker_threads(jobs, threads))
    try:
        for pending, trained_here in runs:
            for job, trained in zip(pending, trained_here):
                result = folder.read_fold(job)
                if result is None:
                    raise EvaluationError(
                        f"{folder.fold_path(job)}: a worker trained this fold but its file is not there; --out "
                        "must be a folder that this process and every worker share (docs/cluster.md)")
                yield job, result, not trained
    finally:
        runs.close()  # an error or Ctrl-C here stops the workers now, not when the generator is collected


def train_in_processes(task: ChunkTask, todo: Sequence[Sequence[FoldJob]], plan: RunPlan, out: Path, device: str,
                       jobs: int, threads: int) -> Trained:
    """Each chunk of ``todo`` trained by one of ``jobs`` local worker processes (``threads`` threads each),
    yielded as it finishes."""
    from joblib import delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    parent = os.getpid()
    pool = worker_pool(jobs, threads, len(todo), TORCH_WORKERS)
    results = pool(delayed(call_in_worker)(task, threads, parent, index, pending, plan, out, device)
                   for index, pending in enumerate(todo))
    try:
        for index, trained_here in results:
            yield todo[index], trained_here
    except TerminatedWorkerError:
        raise EvaluationError(
            f"a worker process training folds died (killed, or out of memory?); the folds written are kept in "
            f"{out}: run the same command again to resume (with fewer --jobs if memory ran out)") from None
    finally:
        results.close()  # kills the workers if the run stops early


def train_on_cluster(task: ChunkTask, scheduler: "str | Client", todo: Sequence[Sequence[FoldJob]],
                     plan: RunPlan, out: Path, device: str) -> Trained:
    """Each chunk of ``todo`` as one task of the dask cluster at ``scheduler``, yielded as it finishes.

    A task whose worker dies is run again by the scheduler; one that every worker died
    under (dask's ``allowed-failures``) ends the run with the folds written kept.
    """
    from fr_mer.cluster import as_finished, connect, killed_worker_error

    client = connect(scheduler)
    killed = killed_worker_error()
    try:
        for pending, future in as_finished(client, task, todo, plan, out, device, name="fr-mer-folds"):
            try:
                trained_here = future.result()
            except killed as error:
                names = ", ".join(f"seed {job.seed} {job.fold.subject}" for job in pending)
                raise EvaluationError(
                    f"{names}: every worker that trained it died ({error}); the folds written are kept: look in "
                    "the workers' logs (memory?) and run the same command again to resume") from None
            yield pending, trained_here
    finally:
        if client is not scheduler:
            client.close()
