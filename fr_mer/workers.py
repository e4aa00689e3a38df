"""fr-mer's worker processes: how many cores a run may use, how many threads each process starts, and
that workers end with their run.

The thread budget. A process of fr-mer starts at most :func:`threads_per_process` compute threads:
the usable cores (:func:`usable_cores`: the CPU affinity mask, capped by a cgroup CPU quota) divided
by the processes of its run that compute at the same time (``evaluate --jobs N``'s workers,
``preprocess``'s workers and, with ``--flow-device cpu``, its main process). An explicit
``--threads`` wins. Why: torch's CPU wheels use GNU OpenMP, whose threads spin for a while at every
barrier before they sleep (``GOMP_SPINCOUNT``); libgomp shortens the spin only when its own process
has more threads than cores, not when other processes hold them. Two processes that each start a
thread per core on the same cores then burn their time slices spinning against each other (two
``fr-mer demo`` at once took 3.9x one alone, not 2x). Processes of one thread each never spin; they
share the cores as the kernel schedules them (docs/benchmarks-speed.md).

:func:`call_in_worker` is what a worker process of ``joblib``'s loky backend runs for each task: it
applies the budget to the libraries loaded in it (torch, OpenCV), keeps torch's inter-op pool at one
thread (fr-mer never forks torch work; the pool would be threads that only wait), and starts a watch
that ends the worker soon after its parent dies (:func:`exit_with_parent`). The BLAS and OpenMP
libraries read their limits from the environment when they load; :func:`worker_pool` passes them
(joblib's ``inner_max_num_threads``). Nothing here imports torch or OpenCV at the top: ``scan`` and
``preprocess`` do not pay for torch (docs/architecture.md).
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from typing import Any, Callable

#: How often a worker checks that the run's process is still its parent.
ORPHAN_POLL_SECONDS = 1.0

_watched_parent: int | None = None


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (``os.sched_getaffinity``), capped by a cgroup
    CPU quota (``docker --cpus``) and ``LOKY_MAX_CPU_COUNT``; at least 1 (``joblib.cpu_count``)."""
    from joblib import cpu_count

    return max(1, int(cpu_count()))


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """Compute threads each of ``processes`` processes that run at once may start: ``cores`` (default
    :func:`usable_cores`) divided among them, at least 1."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive integer, got {processes!r}")
    return max(1, (usable_cores() if cores is None else cores) // processes)


def set_process_threads(threads: int | None = None) -> int:
    """The torch threads of a command's own process, which computes alone: ``threads`` (``--threads``),
    else torch's default (one per physical core) capped by :func:`usable_cores`; set, and returned."""
    import torch

    chosen = threads or min(torch.get_num_threads(), usable_cores())
    torch.set_num_threads(chosen)
    return chosen


def limit_threads(threads: int) -> None:
    """Hold this process's compute threads to ``threads``: torch's intra-op pool and OpenCV's, for the
    libraries already loaded (a library loaded later reads the environment :func:`worker_pool` set)."""
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
        if torch.get_num_interop_threads() != 1:
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # the pool started already (a library caller's process): leave it
                pass
    if "cv2" in sys.modules:
        import cv2

        cv2.setNumThreads(threads)


def exit_with_parent(parent: int) -> None:
    """Make this worker process exit soon after ``parent`` dies (once per process).

    joblib's loky workers outlive a parent killed by ``kill -9`` (they idle for
    minutes, holding their memory, or finish the task they hold): nothing tells them.
    A daemon thread polls ``os.getppid()``, which changes when the parent dies and
    the worker is handed to init, and then ends the process. A worker inside a long
    C call that holds the GIL exits when the call returns.
    """
    global _watched_parent
    if _watched_parent == parent or parent == os.getpid():
        return
    _watched_parent = parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="fr-mer-parent-watch", daemon=True).start()


def call_in_worker(func: Callable[..., Any], threads: int, parent: int, tag: Any, *args: Any) -> tuple[Any, Any]:
    """``(tag, func(*args))``, run in a worker process of :func:`worker_pool` with ``threads`` compute
    threads; ``tag`` tells the caller which task finished (results come back in order of completion).

    ``func`` is unpickled, so its module (and what that imports: torch for an evaluation's folds) is
    loaded before this runs and :func:`limit_threads` reaches it.
    """
    exit_with_parent(parent)
    limit_threads(threads)
    return tag, func(*args)


#: The libraries of each kind of fr-mer worker (:func:`worker_pool`'s ``libraries``): an evaluation's
#: folds and the probe's (whose module imports torch too) share torch workers; preprocessing has its own.
TORCH_WORKERS = ("torch",)
OPENCV_WORKERS = ("cv2",)


def import_libraries(names: tuple[str, ...]) -> None:
    """A worker's start (:func:`worker_pool`): import the libraries its tasks need."""
    for name in names:
        importlib.import_module(name)


def worker_pool(jobs: int, threads: int, tasks: int, libraries: tuple[str, ...], *,
                ahead: str | int = "2*n_jobs"):
    """A ``joblib.Parallel`` of ``jobs`` loky processes whose BLAS / OpenMP libraries start ``threads``
    threads, giving results as they finish; at most ``ahead`` (default ``2 * jobs``) of the ``tasks``
    are sent ahead. Its workers import ``libraries`` when they start (:data:`TORCH_WORKERS`,
    :data:`OPENCV_WORKERS`).

    ``libraries`` also decides which pools share workers. joblib keeps one loky executor per process
    and reuses its workers for the next pool of the same settings (initializer included); loky takes
    a worker's memory after its first task as the reference and restarts it as leaking once it holds
    300 MB more. A preprocessing worker (OpenCV, dlib's models) given an evaluation's fold grows by
    torch and the cache and was restarted after that one fold, so ``fr-mer demo`` paid its
    evaluation workers' start-up twice (docs/benchmarks-speed.md). Pools of other ``libraries`` get
    their own workers; pools of the same (an evaluation, then the probe) reuse them.

    Call it with ``delayed(call_in_worker)(func, threads, os.getpid(), tag, *args)`` items. Closing
    the generator early (an error, Ctrl-C) kills the workers: what they were doing is lost, what
    they had finished stays.
    """
    from joblib import Parallel, parallel_config

    with parallel_config(backend="loky", inner_max_num_threads=threads, initializer=import_libraries,
                         initargs=(tuple(libraries),)):
        return Parallel(n_jobs=min(jobs, max(1, tasks)), return_as="generator_unordered", pre_dispatch=ahead)
