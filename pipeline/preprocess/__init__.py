"""``fr-mer preprocess`` as a library: annotated clips in, cache samples out.

One job per module:

- :mod:`.params`: :class:`PreprocessParams` (with :class:`ClipOptions` and
  :class:`DynamicImageOptions`), what a cache records in ``params``, and the
  software versions it records in ``software``;
- :mod:`.sample`: :func:`process_pair`, one sample's arrays as a pure function of
  its frames and the parameters (no file read, no clip), in two halves around the
  flow (:func:`prepare_pair`, :func:`finish_pair`), and :mod:`.clip`:
  :func:`process_clip`, which reads a scanned clip's frames and calls them
  (:func:`finish_clip` completes a sample whose flow was computed apart);
- :mod:`.run`: :class:`PreprocessRun` and :func:`preprocess`, the resumable
  parallel run that writes the cache; :mod:`.outcome`: a worker's sample and
  which of its errors are bad data (the sample fails) or a bug (the run stops);
  :mod:`.summary`: the run's counts and timings.

The names below are the public ones; import them from here.
"""
from fr_mer.pipeline.preprocess.clip import (
    Sample,
    finish_clip,
    is_pre_cropped,
    is_pre_cropped_path,
    process_clip,
    read_gray,
)
from fr_mer.pipeline.preprocess.params import (
    ClipOptions,
    DynamicImageOptions,
    PreprocessParams,
    software_versions,
)
from fr_mer.pipeline.preprocess.outcome import Outcome
from fr_mer.pipeline.preprocess.run import DEFAULT_FLOW_BATCH, PreprocessRun, default_jobs, preprocess, start_workers
from fr_mer.pipeline.preprocess.summary import PreprocessSummary
from fr_mer.pipeline.preprocess.sample import (
    STAGES,
    PairSample,
    PendingPair,
    SampleError,
    SpottedApex,
    finish_pair,
    prepare_pair,
    process_pair,
    spot_pair,
)

__all__ = [
    "DEFAULT_FLOW_BATCH",
    "STAGES",
    "ClipOptions",
    "DynamicImageOptions",
    "Outcome",
    "PairSample",
    "PendingPair",
    "PreprocessParams",
    "PreprocessRun",
    "PreprocessSummary",
    "Sample",
    "SampleError",
    "SpottedApex",
    "default_jobs",
    "finish_clip",
    "finish_pair",
    "is_pre_cropped",
    "is_pre_cropped_path",
    "prepare_pair",
    "preprocess",
    "process_clip",
    "process_pair",
    "read_gray",
    "software_versions",
    "spot_pair",
    "start_workers",
]
