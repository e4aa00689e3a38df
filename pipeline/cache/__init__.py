"""The HDF5 cache: what ``fr-mer preprocess`` writes and every model reads.

Schema (``docs/cache-format.md`` is the reader's version of this docstring):

- Root attributes: ``schema_version`` (:data:`SCHEMA_VERSION`), ``params`` (JSON of
  the parameters that produced the samples), ``software`` (JSON of versions),
  ``created``; each array dataset carries its own attributes (``channels``,
  ``normalisation``, ``units``...).
- ``/samples/<column>``: one row per finished sample, every column the same
  length. Metadata columns are :data:`META_COLUMNS`; array columns are declared by
  the writer (e.g. ``flow`` (N, 3, 28, 28) float32, ``onset_face`` (N, 128, 128) uint8).
- ``/failures/key``, ``/failures/reason``: samples that could not be made, and why.

Crash safety: the file is written in HDF5's single-writer/multiple-reader (SWMR)
mode, which keeps the file consistent on disk after every flush. A row is
committed when the ``key`` column has grown to include it; ``key`` is always
resized last. A file killed between the two is repaired on the next open for
writing by truncating every column to the length of ``key``. So a ``kill -9``
loses at most the rows in flight, and the file always opens. Only one writer at a
time: a lock file beside the cache (:mod:`.files`).

Modules: :mod:`.schema` (the version, the columns and their widths), :mod:`.files`
(the one-writer lock and the checks made before HDF5 opens a file), :mod:`.writer`
(:class:`CacheWriter`) and :mod:`.reader` (:func:`read_cache`).
"""
from fr_mer.pipeline.cache.files import CacheError, CacheParamsError, check_replaceable
from fr_mer.pipeline.cache.reader import Cache, read_cache
from fr_mer.pipeline.cache.schema import (
    FLAGS_WIDTH,
    KEY_WIDTH,
    META_COLUMNS,
    REASON_WIDTH,
    SCHEMA_VERSION,
    SHIFTED_COLUMNS,
    ArraySpec,
)
from fr_mer.pipeline.cache.trust import check_finished
from fr_mer.pipeline.cache.writer import CacheWriter

__all__ = [
    "FLAGS_WIDTH",
    "KEY_WIDTH",
    "META_COLUMNS",
    "REASON_WIDTH",
    "SCHEMA_VERSION",
    "SHIFTED_COLUMNS",
    "ArraySpec",
    "Cache",
    "CacheError",
    "CacheParamsError",
    "CacheWriter",
    "check_finished",
    "check_replaceable",
    "read_cache",
]
