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
loses at most the rows in flight, and the file always opens.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np

from fr_mer.errors import FrMerError

#: Version of the layout below. Bump it when a reader of the old layout would
#: misread the new one; readers refuse other versions with a clear message.
#: 1: flow, aligned onset/apex faces, landmarks, alignment matrix.
#: 2: adds the optional temporal columns (``clip_frames``, ``dynamic_images``)
#:    of the clip models and records their options in ``params``.
#: 3: the face crops, landmarks, matrix and clip inputs cover the flow crop's face
#:    region exactly; version 2 had them shifted by half a pixel times (1 - crop
#:    size / flow size) against it (0.25 px at the default sizes), the flow itself
#:    being right.
SCHEMA_VERSION = 3

#: Older versions that are still read, with the array columns they hold wrongly:
#: a version-2 cache serves the flow models, not the models of its crops.
SHIFTED_COLUMNS = {
    2: ("onset_face", "apex_face", "landmarks", "align_matrix", "clip_frames", "dynamic_images"),
}

#: Widths (bytes) of the sample key (``database/subject/clip``), of the flags
#: and of a failure's reason.
KEY_WIDTH = 96
FLAGS_WIDTH = 160
REASON_WIDTH = 512

#: Per-sample metadata columns: name -> numpy dtype (fixed-size, SWMR-friendly).
META_COLUMNS: dict[str, str] = {
    "key": f"S{KEY_WIDTH}",
    "database": "S8",
    "subject": "S16",
    "clip": "S64",
    "emotion": "S32",
    "label": "i1",  # class index into pipeline.labels.CLASSES, -1 when none
    "onset_frame": "i4",
    "apex_frame": "i4",
    "offset_frame": "i4",
    "flags": f"S{FLAGS_WIDTH}",  # comma-separated, e.g. "apex_repaired,face_fallback_apex"
}
_FAILURE_COLUMNS = {"key": f"S{KEY_WIDTH}", "reason": f"S{REASON_WIDTH}"}


class CacheError(FrMerError, ValueError):
    """A cache that cannot be used as asked; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """A per-sample array column: shape of one sample, dtype, descriptive attributes."""

    shape: tuple[int, ...]
    dtype: str
    attrs: Mapping[str, object] = dataclasses.field(default_factory=dict)


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _encode(text: object, width: int, column: str) -> bytes:
    data = str(text).encode("utf-8")
    if len(data) > width:
        raise CacheError(f"{column} value {text!r} is longer than {width} bytes")
    return data


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") for v in values]


class CacheWriter:
    """Appends samples to a cache, resumably.

    ``params`` must describe everything that changes the samples' content; a
    cache made with other params is refused (``overwrite=True`` starts afresh),
    so samples made two ways are never mixed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        params: Mapping[str, object],
        arrays: Mapping[str, ArraySpec],
        software: Mapping[str, object] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.params = json.loads(_canonical_json(params))
        self.arrays = dict(arrays)
        if overwrite and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._open_existing()
        else:
            self._create(software or {})
        self._file.swmr_mode = True
        self._samples = self._file["samples"]
        self._failures = self._file["failures"]

    # -- opening ---------------------------------------------------------
    def _create(self, software: Mapping[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.path, "w", libver="latest")
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["params"] = _canonical_json(self.params)
        f.attrs["software"] = _canonical_json(software)
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        samples = f.create_group("samples")
        for name, dtype in META_COLUMNS.items():
            samples.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,))
        for name, spec in self.arrays.items():
            if name in META_COLUMNS:
                raise CacheError(f"array column {name!r} clashes with a metadata column")
            rows = max(1, min(64, (1 << 20) // max(1, int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize)))
            ds = samples.create_dataset(
                name,
                shape=(0, *spec.shape),
                maxshape=(None, *spec.shape),
                dtype=spec.dtype,
                chunks=(rows, *spec.shape),
            )
            for key, value in spec.attrs.items():
                ds.attrs[key] = value if isinstance(value, (int, float, str)) else _canonical_json(value)
        failures = f.create_group("failures")
        for name, dtype in _FAILURE_COLUMNS.items():
            failures.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(64,))
        f.flush()
        self._file = f

    def _open_existing(self) -> None:
        try:
            f = h5py.File(self.path, "a", libver="latest")
        except OSError:
            # A writer killed in SWMR mode leaves the "open for writing" flag set;
            # the data is consistent, so copy the committed rows to a fresh file.
            _recover(self.path)
            try:
                f = h5py.File(self.path, "a", libver="latest")
            except OSError as exc:
                raise CacheError(
                    f"{self.path}: cannot open the cache ({exc}); delete it or pass --overwrite"
                ) from exc
        version = int(f.attrs.get("schema_version", -1))
        if version in SHIFTED_COLUMNS:
            f.close()
            raise CacheError(
                f"{self.path}: cache schema version {version} holds face crops and landmarks shifted "
                f"against the flow (fixed in version {SCHEMA_VERSION}); samples of the two versions are "
                "never mixed: re-run `fr-mer preprocess` into a new --out (or --overwrite to rebuild it)"
            )
        if version != SCHEMA_VERSION:
            f.close()
            raise CacheError(
                f"{self.path}: cache schema version {version}, this fr-mer writes "
                f"{SCHEMA_VERSION}; use another --out or --overwrite to rebuild it"
            )
        stored = json.loads(f.attrs.get("params", "{}"))
        if stored != self.params:
            f.close()
            diff = sorted(
                k for k in set(stored) | set(self.params) if stored.get(k) != self.params.get(k)
            )
            raise CacheError(
                f"{self.path}: made with other parameters ({', '.join(diff)} differ); "
                "samples made two ways are never mixed: use another --out, or --overwrite "
                "to recompute everything"
            )
        samples = f["samples"]
        missing = [n for n in self.arrays if n not in samples]
        if missing:
            f.close()
            raise CacheError(f"{self.path}: lacks columns {missing}; use --overwrite")
        committed = samples["key"].shape[0]
        for name in samples:
            if samples[name].shape[0] != committed:  # a write was cut short
                samples[name].resize(committed, axis=0)
        failures = f["failures"]
        n_fail = min(failures["key"].shape[0], failures["reason"].shape[0])
        for name in failures:
            failures[name].resize(n_fail, axis=0)
        f.flush()
        self._file = f

    # -- state -------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._samples["key"].shape[0])

    def done_keys(self) -> set[str]:
        return set(_decode(self._samples["key"][...]))

    # -- writing -------------------------------------------------------------
    def append(self, meta: Mapping[str, object], arrays: Mapping[str, np.ndarray]) -> None:
        """Commit one sample. ``meta`` holds every META_COLUMNS entry but ``flags``."""
        missing = [n for n in self.arrays if n not in arrays]
        if missing:
            raise CacheError(f"sample {meta.get('key')}: arrays {missing} missing")
        n = len(self)
        for name, spec in self.arrays.items():
            value = np.asarray(arrays[name], dtype=spec.dtype)
            if value.shape != spec.shape:
                raise CacheError(
                    f"sample {meta.get('key')}: {name} has shape {value.shape}, expected {spec.shape}"
                )
            ds = self._samples[name]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        for name, dtype in META_COLUMNS.items():
            if name == "key":
                continue
            value = meta.get(name, "" if name == "flags" else None)
            if value is None:
                value = -1 if dtype.startswith("i") else ""
            if isinstance(value, (list, tuple, set)):
                value = ",".join(sorted(value))
            ds = self._samples[name]
            ds.resize(n + 1, axis=0)
            ds[n] = _encode(value, int(dtype[1:]), name) if dtype.startswith("S") else int(value)
        key = self._samples["key"]
        key.resize(n + 1, axis=0)
        key[n] = _encode(meta["key"], KEY_WIDTH, "key")
        self._file.flush()

    def append_failure(self, key: str, reason: str) -> None:
        # cut to the column at a character boundary, so that the reason decodes
        reason_bytes = str(reason).encode("utf-8")[:REASON_WIDTH].decode("utf-8", "ignore").encode("utf-8")
        n = self._failures["key"].shape[0]
        for name, value in (("reason", reason_bytes), ("key", _encode(key, KEY_WIDTH, "key"))):
            ds = self._failures[name]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recover(path: Path) -> None:
    """Rewrite a cache left by a killed writer: committed rows only, atomically."""
    tmp = path.with_name(path.name + ".recover")
    try:
        src = h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise CacheError(
            f"{path}: cannot open the cache ({exc}); delete it or pass --overwrite"
        ) from exc
    with src, h5py.File(tmp, "w", libver="latest") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for group_name, key_column in (("samples", "key"), ("failures", "key")):
            group = src[group_name]
            committed = min(group[name].shape[0] for name in group)
            committed = min(committed, group[key_column].shape[0])
            out = dst.create_group(group_name)
            for name in group:
                ds = group[name]
                new = out.create_dataset(
                    name, data=ds[:committed], maxshape=ds.maxshape, chunks=ds.chunks
                )
                for key, value in ds.attrs.items():
                    new.attrs[key] = value
    os.replace(tmp, path)


@dataclasses.dataclass
class Cache:
    """A cache read into memory: metadata columns as lists, arrays as numpy."""

    path: Path
    schema_version: int
    params: dict
    software: dict
    meta: dict[str, list]  # column -> list (strings decoded, ints as int)
    arrays: dict[str, np.ndarray]
    array_attrs: dict[str, dict]
    available_arrays: tuple[str, ...]
    failures: dict[str, str]

    def __len__(self) -> int:
        return len(self.meta["key"])

    @property
    def keys(self) -> list[str]:
        return self.meta["key"]


def read_cache(
    path: str | Path,
    arrays: Iterable[str] = (),
    *,
    require_labels: bool = False,
) -> Cache:
    """Read a cache's metadata and the named array columns.

    Raises :class:`CacheError` naming the file and what to do when it is not a
    cache, has another schema version, or lacks a requested array. A cache of an
    older version in :data:`SHIFTED_COLUMNS` is read for its other columns only.
    """
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such cache; run `fr-mer preprocess` or `fr-mer import-ststnet`")
    try:
        f = h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise CacheError(f"{path}: not a readable HDF5 cache ({exc})") from exc
    with f:
        if "schema_version" not in f.attrs or "samples" not in f:
            raise CacheError(f"{path}: not an fr-mer cache (no schema_version); run `fr-mer preprocess`")
        version = int(f.attrs["schema_version"])
        arrays = list(arrays)
        shifted = sorted(set(arrays) & set(SHIFTED_COLUMNS.get(version, ())))
        if shifted:
            raise CacheError(
                f"{path}: cache schema version {version} holds {', '.join(shifted)} shifted against the "
                f"flow crop (fixed in version {SCHEMA_VERSION}); re-run `fr-mer preprocess` into a new --out "
                "(or with --overwrite) to use them"
            )
        if version != SCHEMA_VERSION and version not in SHIFTED_COLUMNS:
            raise CacheError(
                f"{path}: cache schema version {version}, this fr-mer reads {SCHEMA_VERSION}; "
                "re-run `fr-mer preprocess --overwrite` to rebuild it"
            )
        samples = f["samples"]
        n = samples["key"].shape[0]
        meta: dict[str, list] = {}
        for name, dtype in META_COLUMNS.items():
            values = samples[name][:n]
            meta[name] = _decode(values) if dtype.startswith("S") else [int(v) for v in values]
        available = tuple(sorted(k for k in samples if k not in META_COLUMNS))
        loaded: dict[str, np.ndarray] = {}
        attrs: dict[str, dict] = {}
        for name in arrays:
            if name not in samples:
                raise CacheError(
                    f"{path}: has no {name!r} input (it holds {', '.join(available) or 'none'}); "
                    "re-run `fr-mer preprocess` with the option that stores it (see docs/cache-format.md)"
                )
            loaded[name] = samples[name][:n]
            attrs[name] = dict(samples[name].attrs)
        failures = {}
        if "failures" in f:
            nf = min(f["failures/key"].shape[0], f["failures/reason"].shape[0])
            for k, r in zip(_decode(f["failures/key"][:nf]), _decode(f["failures/reason"][:nf])):
                failures[k] = r
        done = set(meta["key"])
        failures = {k: r for k, r in failures.items() if k not in done}
        cache = Cache(
            path=path,
            schema_version=version,
            params=json.loads(f.attrs.get("params", "{}")),
            software=json.loads(f.attrs.get("software", "{}")),
            meta=meta,
            arrays=loaded,
            array_attrs=attrs,
            available_arrays=available,
            failures=failures,
        )
    if require_labels and any(label < 0 for label in cache.meta["label"]):
        bad = [k for k, l in zip(cache.meta["key"], cache.meta["label"]) if l < 0][:5]
        raise CacheError(
            f"{path}: samples without a composite label ({', '.join(bad)}...); "
            "preprocess with the composite list, or evaluate with a protocol that uses emotions"
        )
    return cache
