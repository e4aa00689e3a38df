"""The parallel runner of ``fr-mer preprocess``: annotated clips in, cache samples out.

:class:`PreprocessRun` fans clips out to ``jobs`` processes (joblib's loky
backend), or to the workers of a ``dask.distributed`` cluster (``scheduler``,
:mod:`fr_mer.cluster`), takes the results back in order of completion, and
writes them from the run's process only through
:class:`pipeline.cache.CacheWriter` (the holder of the cache's lock): samples
already in the cache with the same parameters are skipped, a sample that cannot be
made is recorded as a failure with its reason while the others go on, and a run
killed at any moment loses at most the samples in flight.

Memory does not grow with the number of clips: a bounded number of clips is in
flight at once (joblib's ``pre_dispatch``, the cluster's :func:`fr_mer.cluster.as_finished`
window) and each finished sample is written and dropped before the next is
taken; the run keeps only counts and the failures' reasons.

With the torch TV-L1 (``params.flow_implementation == "torch"``, ``--flow-device
cpu|cuda``) the workers stop each sample before its flow
(``process_clip(..., defer_flow=True)``); this process stacks the waiting pairs,
``flow_batch`` at a time, computes their flows as one batch on ``flow_device``,
finishes the samples (:func:`~fr_mer.pipeline.preprocess.clip.finish_clip`: strain,
features) and writes them. At most ``flow_batch`` samples wait so.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

from fr_mer.errors import ParameterError
from fr_mer.pipeline.cache import CacheError, CacheParamsError, CacheWriter
from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.flow import UNRECORDED_NORMALISATION
from fr_mer.pipeline.preprocess.clip import source_difference
from fr_mer.pipeline.preprocess.outcome import Outcome, finish_flows, make_outcome
from fr_mer.pipeline.preprocess.params import PARAM_OPTIONS, PARAMS_ADDED, PreprocessParams, software_versions
from fr_mer.pipeline.preprocess.summary import PreprocessSummary
from fr_mer.pipeline.preprocess.sample import aligner_for
from fr_mer.pipeline.readers import SMIC_APEX_RULES
from fr_mer.workers import OPENCV_WORKERS, call_in_worker, threads_per_process, usable_cores, worker_pool

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client


#: Pairs whose torch TV-L1 flows are computed as one batch by default (``--flow-batch``).
DEFAULT_FLOW_BATCH = 32


def default_jobs() -> int:
    """``--jobs`` when it is not given: every core this process may use (:func:`fr_mer.workers.usable_cores`)."""
    return usable_cores()


class PreprocessRun:
    """One resumable run: opening it opens the cache, iterating it makes the samples.

    ``for outcome in run: ...`` yields one :class:`Outcome` per sample made or
    failed, as they finish (``len(run)`` of them after the scan's unusable
    clips are recorded); ``run.summary`` holds the counts. Opening raises
    :class:`pipeline.cache.CacheError` when ``out`` was made with other
    parameters (or another schema) and ``overwrite`` is false, and
    :class:`~fr_mer.errors.ParameterError`
    when the clips were scanned with another SMIC apex rule than ``params``.

    ``scheduler`` (an address or a ``distributed.Client``) runs the clips on a
    dask cluster's workers instead of ``jobs`` local processes; the workers must
    see the clips' frames at the same paths, and this process still writes the
    cache. ``jobs`` then reports the cluster's worker threads at the start.

    ``flow_device`` (``cpu``, ``cuda``, ``cuda:1``; None: ``cpu``) and
    ``flow_batch``: where and how many pairs at once this process computes the
    flows when ``params.flow_implementation`` is ``torch`` (the module docstring);
    a device torch cannot use is refused with a
    :class:`~fr_mer.errors.ParameterError` before the cache is opened.
    ``flow_threads``: torch's CPU threads while the run iterates (None: the thread budget,
    :mod:`fr_mer.workers`: the usable cores divided among this process and its ``jobs`` workers,
    which align while it computes flows).
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        out: str | Path,
        params: PreprocessParams,
        *,
        jobs: int | None = None,
        overwrite: bool = False,
        scheduler: "str | Client | None" = None,
        flow_device: str | None = None,
        flow_batch: int = DEFAULT_FLOW_BATCH,
        flow_threads: int | None = None,
    ) -> None:
        for name, value in (("jobs", jobs), ("flow_batch", flow_batch), ("flow_threads", flow_threads)):
            if (value is not None or name == "flow_batch") and not _positive_int(value):
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        clips = list(clips)
        self.params = params
        _check_apex_rule(clips, params.smic_apex)
        self.flow_device = _flow_device(params, flow_device)
        self.flow_batch = flow_batch
        # Connected before the cache is opened: an unreachable scheduler changes no file.
        self.client = None
        self._own_client = False
        if scheduler is not None:
            from fr_mer.cluster import connect

            self.client = connect(scheduler)
            self._own_client = self.client is not scheduler
            self.jobs = sum(self.client.nthreads().values())
        else:
            self.jobs = jobs or default_jobs()
        # This process computes the flows while the local workers align (a cluster's work elsewhere).
        computing = 1 if self.client is not None or self.jobs <= 1 else self.jobs + 1
        self.flow_threads = (flow_threads or threads_per_process(computing)) if self.flow_device is not None else None
        self.summary = PreprocessSummary(out=Path(out), total=len(clips), jobs=self.jobs)
        try:
            self.writer = _open_cache(out, params, overwrite)
        except BaseException:
            self._close_client()
            raise
        self.todo, self.unusable, self.summary.skipped, self.summary.remade = _sort_clips(
            clips, self.writer.stored_rows())
        for key in self.summary.remade:  # made again, never kept stale
            self.writer.retire(key)

    def __len__(self) -> int:
        """Samples this run will try to make (the progress bar's length)."""
        return len(self.todo)

    def __enter__(self) -> "PreprocessRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()
        self._close_client()

    def _close_client(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()
        self.client = None

    def __iter__(self) -> Iterator[Outcome]:
        start = time.perf_counter()
        torch_threads = None
        if self.flow_threads is not None:
            import torch

            torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.flow_threads)
        try:
            for key, reason in self.unusable:
                if key not in self.summary.failed:
                    self.writer.append_failure(key, reason)
                    self.summary.failed[key] = reason
            jobs = min(self.jobs, len(self.todo))
            defer = self.flow_device is not None
            if self.client is not None:
                results: Iterable[Outcome] = self._on_cluster(defer)
            elif jobs <= 1:
                # In-process: no worker start-up, and the caller's debugger works.
                results = (make_outcome(clip, self.params, None, defer) for clip in self.todo)
            else:
                from joblib import delayed

                # deferring, the workers keep aligning the next batch while this process computes flows
                ahead = max(2 * jobs, self.flow_batch + jobs) if defer else 2 * jobs
                # the workers' BLAS / OpenMP libraries within the thread budget (OpenCV's: make_outcome);
                # OpenCV workers, not an evaluation's torch ones (worker_pool says why they differ)
                parallel = worker_pool(jobs, threads_per_process(self.jobs), len(self.todo), OPENCV_WORKERS,
                                       ahead=ahead)
                results = parallel(delayed(make_outcome)(clip, self.params, os.getpid(), defer) for clip in self.todo)
            waiting: list[Outcome] = []
            for outcome in results:
                if outcome.sample is not None and outcome.sample.pending is not None:
                    waiting.append(outcome)
                    if len(waiting) < self.flow_batch:
                        continue
                    outcomes, waiting = finish_flows(waiting, self.params, self.flow_device), []
                else:
                    outcomes = [outcome]
                for done in outcomes:
                    self._record(done)
                    yield done
            for done in finish_flows(waiting, self.params, self.flow_device):
                self._record(done)
                yield done
            self.writer.finish()  # every clip given is now a sample or a failure
        finally:
            self.summary.wall_seconds = time.perf_counter() - start
            self.close()
            if torch_threads is not None:
                import torch

                torch.set_num_threads(torch_threads)

    def _on_cluster(self, defer_flow: bool) -> Iterator[Outcome]:
        """The outcomes of the clips run on the cluster's workers, as they finish.

        A clip whose task was running on every worker that died under it (dask's
        ``allowed-failures``) is recorded as a failure, like a clip that raised.
        """
        from fr_mer.cluster import as_finished, killed_worker_error

        killed = killed_worker_error()
        for clip, future in as_finished(self.client, make_outcome, self.todo, self.params, None, defer_flow,
                                        name="fr-mer-clip"):
            try:
                yield future.result()
            except killed as error:
                yield Outcome(clip.key, None, f"{clip.key}: every worker that processed it died ({error})")

    def _record(self, outcome: Outcome) -> None:
        summary = self.summary
        if outcome.sample is None:
            self.writer.append_failure(outcome.key, outcome.reason)
            summary.failed[outcome.key] = outcome.reason
            return
        sample = outcome.sample
        start = time.perf_counter()
        try:
            self.writer.append(sample.meta, sample.arrays)
        except CacheError as error:  # e.g. a clip name too long for its column
            self.writer.append_failure(outcome.key, str(error))
            summary.failed[outcome.key] = str(error)
            return
        summary.stage_seconds["write"] += time.perf_counter() - start
        for stage, seconds in sample.timings.items():
            summary.stage_seconds[stage] += seconds
        summary.done += 1
        summary.cpu_seconds += sample.cpu_seconds
        summary.repaired += int(sample.repaired)
        summary.flags.update(sample.meta["flags"])

    def run(self, progress: Callable[[Outcome], None] | None = None) -> PreprocessSummary:
        """Make every sample; ``progress`` is called after each one."""
        for outcome in self:
            if progress is not None:
                progress(outcome)
        return self.summary


def _positive_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _open_cache(out: str | Path, params: PreprocessParams, overwrite: bool) -> CacheWriter:
    """The cache's writer (its lock taken); a cache of other parameters is refused, naming the option to pass
    for a normalisation it was made with."""
    try:
        return CacheWriter(out, params=params.as_dict(), arrays=params.array_specs(), software=software_versions(),
                           overwrite=overwrite, params_added=PARAMS_ADDED, options=PARAM_OPTIONS)
    except CacheParamsError as error:
        if "normalisation" not in error.differ:
            raise
        made = error.stored.get("normalisation", UNRECORDED_NORMALISATION)
        raise CacheParamsError(
            f"{error} (it holds flow made with --normalisation {made}, this run asks for "
            f"{params.normalisation}: to resume it pass --normalisation {made})", error.stored, error.differ
        ) from None


def _sort_clips(clips: Sequence[Clip], stored: Mapping[str, Mapping[str, object]]
                ) -> tuple[list[Clip], list[tuple[str, str]], int, dict[str, str]]:
    """The clips to make, the (key, reason) of those that cannot be made (a key listed twice, a clip the
    scan found unusable), how many are in the cache already (``stored``: key -> its source columns), and
    the cached ones whose sheet row or frame files changed since (key -> what changed), to make again."""
    todo: list[Clip] = []
    unusable: list[tuple[str, str]] = []
    skipped = 0
    remade: dict[str, str] = {}
    seen: set[str] = set()
    for clip in clips:
        key = clip.key
        if key in seen:
            where = f" ({clip.source} row {clip.row})" if clip.source else ""
            unusable.append((key, f"{key}: listed twice{where}; the first is kept"))
            continue
        seen.add(key)
        changed = source_difference(clip, stored[key]) if key in stored else ""
        if changed:
            remade[key] = changed
        if key in stored and not changed:
            skipped += 1
        elif not clip.usable:
            unusable.append((key, f"unusable in the scan: {clip.problem or 'no reason given'}"))
        else:
            todo.append(clip)
    return todo, unusable, skipped, remade


def _flow_device(params: PreprocessParams, device: str | None) -> str | None:
    """The torch device of the run's flows (None: OpenCV's in the workers), checked before any file changes."""
    if params.flow_implementation != "torch":
        if device is not None:
            raise ParameterError(f"flow_device {device!r} is for the torch TV-L1, but the parameters say "
                                 f"flow_implementation={params.flow_implementation!r}")
        return None
    from fr_mer.pipeline.tvl1_torch import check_device, check_params

    check_params(params.tvl1)
    return str(check_device(device or "cpu"))


def _check_apex_rule(clips: Sequence[Clip], smic_apex: str) -> None:
    """SMIC clips must have been scanned with the rule the cache will record."""
    other = sorted({
        c.apex_rule for c in clips
        if c.dataset == "smic" and c.apex_rule in SMIC_APEX_RULES and c.apex_rule != smic_apex
    })
    if other:
        raise ParameterError(
            f"SMIC clips were scanned with apex rule {', '.join(other)} but the parameters say "
            f"smic_apex={smic_apex!r}; scan and preprocess with the same --smic-apex"
        )


def start_workers(params: PreprocessParams, jobs: int | None = None) -> Callable[[], None]:
    """Start :func:`preprocess`'s ``jobs`` local worker processes now, each loading dlib's models for
    ``params`` (1.2 s of CPU, after 0.3 s of imports), for a caller with other work for its own process
    meanwhile; returns the function that waits for them, to call before :func:`preprocess`.

    ``fr-mer demo`` starts them before its synthesis, one process on one core, so that the other core
    readies them instead of idling, and their first clips do not wait for the models. :func:`preprocess`
    with the same ``jobs`` gets these workers: joblib hands a pool of the same workers' count, threads and
    libraries the running ones (:func:`fr_mer.workers.worker_pool`). Nothing is started for one job.
    """
    jobs = jobs or default_jobs()
    if jobs <= 1:
        return lambda: None
    from joblib import delayed

    threads = threads_per_process(jobs)
    pool = worker_pool(jobs, threads, jobs, OPENCV_WORKERS)
    started = pool(delayed(call_in_worker)(_load_models, threads, os.getpid(), index, params)
                   for index in range(jobs))

    def ready() -> None:
        for _ in started:  # consumed, not dropped: closing it early would end the workers
            pass

    return ready


def _load_models(params: PreprocessParams) -> None:
    aligner_for(params)


def preprocess(
    clips: Sequence[Clip],
    out: str | Path,
    params: PreprocessParams | None = None,
    *,
    jobs: int | None = None,
    overwrite: bool = False,
    progress: Callable[[Outcome], None] | None = None,
    scheduler: "str | Client | None" = None,
    flow_device: str | None = None,
    flow_batch: int = DEFAULT_FLOW_BATCH,
    flow_threads: int | None = None,
) -> PreprocessSummary:
    """Make (or complete) the cache ``out`` from ``clips``; returns the run's summary.

    ``scheduler``: a ``dask.distributed`` scheduler's address (or a client) to
    run the clips on instead of ``jobs`` local processes. ``flow_device``,
    ``flow_batch``, ``flow_threads``: see :class:`PreprocessRun`.
    """
    run = PreprocessRun(clips, out, params or PreprocessParams(), jobs=jobs, overwrite=overwrite,
                        scheduler=scheduler, flow_device=flow_device, flow_batch=flow_batch,
                        flow_threads=flow_threads)
    return run.run(progress)
