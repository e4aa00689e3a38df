"""Work sent to a ``dask.distributed`` cluster (``--scheduler ADDRESS``).

Two commands use it, each keeping its files written as a local run writes them:

- ``fr-mer preprocess`` sends one task per clip; the results come back to the
  command's process, the only writer of the cache (it holds the cache's lock);
- ``fr-mer evaluate`` sends one task per (seed, fold) (or fold stack); each
  worker writes its fold file into the shared ``--out``.

:func:`connect` opens the client; :func:`as_finished` keeps a bounded number of
tasks in flight (:func:`in_flight_limit`: twice the cluster's worker threads),
so the memory held by finished results that the caller has not yet taken does
not grow with the number of tasks. A worker that dies loses only the tasks it
was running: the scheduler runs them again elsewhere, up to dask's
``distributed.scheduler.allowed-failures`` times (default 3), after which the
task's result raises :data:`KilledWorker` (a task that kills every worker it
runs on). ``docs/cluster.md`` says how to start a cluster and what it must share.

``distributed`` is an optional dependency (``pip install 'fr-mer[cluster]'``);
it is imported only when a scheduler is asked for.
"""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from fr_mer.errors import FrMerError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client, Future

Item = TypeVar("Item")

#: Seconds :func:`connect` waits for the scheduler to answer.
CONNECT_TIMEOUT_SECONDS = 30

#: Tasks in flight per worker thread: one running, one queued so the thread never waits for the next.
TASKS_PER_THREAD = 2


class ClusterError(FrMerError):
    """A scheduler that cannot be used (not installed, unreachable); the message says what to do."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError(
            "--scheduler needs dask.distributed, which is not installed: pip install 'fr-mer[cluster]'"
        ) from None
    return distributed


def killed_worker_error() -> type[Exception]:
    """dask's exception for a task that was running on every worker that died under it."""
    return _distributed().KilledWorker


def connect(address: "str | Client") -> "Client":
    """A client of the scheduler at ``address`` (``tcp://host:8786``, or a scheduler file's path).

    A :class:`distributed.Client` is returned as it is (library callers who made their own).
    """
    distributed = _distributed()
    if isinstance(address, distributed.Client):
        return address
    text = str(address)
    try:
        if text.endswith(".json"):  # a scheduler file, as dask-scheduler --scheduler-file writes
            return distributed.Client(scheduler_file=text, timeout=CONNECT_TIMEOUT_SECONDS)
        return distributed.Client(text, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"--scheduler {text}: cannot reach the scheduler ({exc}); start one (docs/cluster.md) "
            "or check the address"
        ) from None


def in_flight_limit(client: "Client") -> int:
    """Tasks to keep submitted: :data:`TASKS_PER_THREAD` per worker thread of the cluster now (at least 2).

    Asked again before each submission, so a cluster that grows (an adaptive
    SLURM cluster) gets more work as its workers arrive.
    """
    threads = sum(client.nthreads().values())
    return max(TASKS_PER_THREAD, TASKS_PER_THREAD * threads)


def as_finished(client: "Client", func: Callable[..., Any], items: Iterable[Item], *args: Any,
                name: str, limit: int | None = None) -> Iterator[tuple[Item, "Future"]]:
    """Run ``func(item, *args)`` on the cluster for each item; yield ``(item, future)`` as each finishes.

    At most ``limit`` tasks (default :func:`in_flight_limit`) are submitted and
    not yet yielded at once; the caller takes ``future.result()`` (which raises
    the task's exception) before asking for the next, and the future is released
    then, so the cluster forgets the result. Closing the generator early cancels
    the tasks still in flight. ``name`` prefixes the task keys (as the dask
    dashboard shows them).
    """
    distributed = _distributed()
    run = uuid.uuid4().hex[:8]
    source = iter(items)
    pending: dict[Future, Item] = {}
    finished = distributed.as_completed()
    counter = 0

    def fill() -> None:
        nonlocal counter
        while len(pending) < (limit or in_flight_limit(client)):
            try:
                item = next(source)
            except StopIteration:
                return
            future = client.submit(func, item, *args, key=f"{name}-{run}-{counter}", pure=False)
            counter += 1
            pending[future] = item
            finished.add(future)

    try:
        fill()
        while pending:
            future = next(finished)
            item = pending.pop(future)
            yield item, future
            future.release()
            fill()
    finally:
        if pending:
            client.cancel(list(pending))
