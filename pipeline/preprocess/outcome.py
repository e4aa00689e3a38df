"""One sample's work and what becomes of its errors: the worker's entry point, and the torch flows of a batch.

:func:`make_outcome` runs in a worker process (joblib's loky, or a dask worker): one
clip to an :class:`Outcome`, a sample or the reason there is none.
:func:`finish_flows` completes, in the run's process, the samples the workers
stopped before their flow (``--flow-device cpu|cuda``). Both keep one rule:
what bad data raises (:data:`SAMPLE_ERRORS`) is that sample's failure, recorded
while the run goes on; anything else is a bug (:class:`SampleBug`), which stops
the run naming the sample.
"""
from __future__ import annotations

import dataclasses
import time

import cv2

from fr_mer.errors import ParameterError
from fr_mer.pipeline.align import DegenerateImageError
from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.flow import tvl1_flows
from fr_mer.pipeline.preprocess.clip import Sample, finish_clip, process_clip
from fr_mer.pipeline.preprocess.params import PreprocessParams
from fr_mer.pipeline.preprocess.sample import SampleError
from fr_mer.workers import exit_with_parent


@dataclasses.dataclass
class Outcome:
    """What a worker sends back: a sample, or the reason there is none."""

    key: str
    sample: Sample | None
    reason: str = ""


#: What bad data raises: recorded as that sample's failure while the run goes on. fr-mer's own
#: (a frame missing, unreadable or truncated, frames of different sizes: :class:`SampleError`; a
#: face whose geometry cannot be computed, an image dlib refuses: :class:`DegenerateImageError`)
#: and OpenCV's on an image it cannot take. Anything else is a bug in fr-mer: :class:`SampleBug`.
SAMPLE_ERRORS = (SampleError, DegenerateImageError, cv2.error)


class SampleBug(RuntimeError):
    """A sample raised what bad data never raises: a bug in fr-mer, which stops the run (exit 3).

    The message names the sample and the exception (its traceback is the cause); the samples
    already written stay in the cache, and a rerun resumes after them.
    """


def _failure(key: str, exc: BaseException) -> str:
    """The reason recorded for a sample that bad data stopped (a :class:`SampleError` names its clip)."""
    return str(exc) if isinstance(exc, SampleError) else f"{key}: {type(exc).__name__}: {exc}"


def _bug(key: str, exc: BaseException) -> SampleBug:
    return SampleBug(f"sample {key}: {type(exc).__name__}: {exc} -- not an error bad data raises, so a bug in "
                     "fr-mer; the run stops (the samples written so far are kept)")


def make_outcome(clip: Clip, params: PreprocessParams, parent: int | None = None, defer_flow: bool = False) -> Outcome:
    """Worker entry point: one sample; bad data becomes its failure reason, anything else a :class:`SampleBug`.

    OpenCV runs one thread per job (within the thread budget, :mod:`fr_mer.workers`), so
    ``--jobs`` is the number of busy cores. ``parent``: the pid of the run's process, which a
    worker outlives by at most :data:`fr_mer.workers.ORPHAN_POLL_SECONDS`
    (:func:`~fr_mer.workers.exit_with_parent`). ``defer_flow``: the sample stops before its
    flow (the run's process computes it).
    """
    if parent is not None:
        exit_with_parent(parent)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return Outcome(clip.key, process_clip(clip, params, defer_flow=defer_flow))
    except SAMPLE_ERRORS as exc:
        # One odd clip must not stop a run of hundreds: record it and go on.
        return Outcome(clip.key, None, _failure(clip.key, exc))
    except Exception as exc:
        raise _bug(clip.key, exc) from exc
    finally:
        cv2.setNumThreads(threads)


def finish_flows(waiting: list[Outcome], params: PreprocessParams, device: str) -> list[Outcome]:
    """The outcomes of samples waiting for their flow: the flows of all as one torch batch, then each finished.

    Each sample is charged an equal share of the batch's wall and CPU time
    (its ``flow`` stage). Raises :class:`~fr_mer.errors.ParameterError` naming
    ``--flow-batch`` when the device runs out of memory.
    """
    if not waiting:
        return []
    import torch

    pending = [outcome.sample.pending for outcome in waiting]
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        flows = tvl1_flows([p.onset for p in pending], [p.apex for p in pending], params.tvl1,
                           implementation="torch", device=device)
    except torch.cuda.OutOfMemoryError as error:
        raise ParameterError(
            f"--flow-device {device}: out of memory on a batch of {len(waiting)} pairs of "
            f"{params.flow_size} px ({str(error).splitlines()[0]}); give a smaller --flow-batch "
            "(the samples written so far are kept: rerun to resume)"
        ) from None
    share = len(waiting)
    seconds, cpu = (time.perf_counter() - start) / share, (time.process_time() - cpu_start) / share
    outcomes = []
    for outcome, flow in zip(waiting, flows):
        try:
            sample = finish_clip(outcome.sample, flow, params, flow_seconds=seconds, cpu_seconds=cpu)
        except SAMPLE_ERRORS as exc:
            outcomes.append(Outcome(outcome.key, None, _failure(outcome.key, exc)))
            continue
        except Exception as exc:
            raise _bug(outcome.key, exc) from exc
        outcomes.append(Outcome(outcome.key, sample))
    return outcomes
