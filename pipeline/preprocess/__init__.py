"""``fr-mer preprocess`` as a library: annotated clips in, cache samples out.

Three modules, one job each:

- :mod:`.params`: :class:`PreprocessParams` (with :class:`ClipOptions` and
  :class:`DynamicImageOptions`), what a cache records in ``params``, and the
  software versions it records in ``software``;
- :mod:`.sample`: :func:`process_pair`, one sample's arrays as a pure function of
  its frames and the parameters (no file read, no clip), and :mod:`.clip`:
  :func:`process_clip`, which reads a scanned clip's frames and calls it;
- :mod:`.run`: :class:`PreprocessRun` and :func:`preprocess`, the resumable
  parallel run that writes the cache.

The names below are the public ones; import them from here.
"""
from fr_mer.pipeline.preprocess.clip import Sample, is_pre_cropped, is_pre_cropped_path, process_clip, read_gray
from fr_mer.pipeline.preprocess.params import (
    ClipOptions,
    DynamicImageOptions,
    PreprocessParams,
    software_versions,
)
from fr_mer.pipeline.preprocess.run import Outcome, PreprocessRun, PreprocessSummary, default_jobs, preprocess
from fr_mer.pipeline.preprocess.sample import STAGES, PairSample, SampleError, process_pair

__all__ = [
    "STAGES",
    "ClipOptions",
    "DynamicImageOptions",
    "Outcome",
    "PairSample",
    "PreprocessParams",
    "PreprocessRun",
    "PreprocessSummary",
    "Sample",
    "SampleError",
    "default_jobs",
    "is_pre_cropped",
    "is_pre_cropped_path",
    "preprocess",
    "process_clip",
    "process_pair",
    "read_gray",
    "software_versions",
]
