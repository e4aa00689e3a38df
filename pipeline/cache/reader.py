"""Reading a cache into memory (:func:`read_cache`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from fr_mer.pipeline.cache.files import CacheError, open_for_reading
from fr_mer.pipeline.cache.schema import (
    LATER_META_COLUMNS,
    META_COLUMNS,
    RETIRED_KEY,
    SCHEMA_VERSION,
    SHIFTED_COLUMNS,
    check_layout,
    decode,
    schema_version,
)
from fr_mer.pipeline.cache.trust import check_content, check_lengths, json_attribute


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


def _check_version(path: Path, version: int, arrays: list[str]) -> None:
    """Refuse another schema version, or the columns an older version still read holds shifted."""
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


def _read_meta(samples: h5py.Group, n: int) -> dict[str, list]:
    """The first ``n`` rows of every metadata column; a column added later reads as its default."""
    meta: dict[str, list] = {}
    for name, dtype in META_COLUMNS.items():
        if name not in samples:  # a column added later (check_layout let it pass)
            meta[name] = [LATER_META_COLUMNS[name]] * n
            continue
        values = samples[name][:n]
        meta[name] = decode(values) if dtype.startswith("S") else [int(v) for v in values]
    return meta


def _read_failures(f: h5py.File, done: set[str]) -> dict[str, str]:
    """key -> reason of the recorded failures, but of the samples made since (``done``)."""
    nf = min(f["failures/key"].shape[0], f["failures/reason"].shape[0])
    failures = dict(zip(decode(f["failures/key"][:nf]), decode(f["failures/reason"][:nf])))
    return {k: r for k, r in failures.items() if k not in done}


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
    if path.is_dir():
        raise CacheError(f"{path}: is a folder, not a cache file; pass the .h5 file `fr-mer preprocess` wrote")
    if not path.is_file():
        raise CacheError(f"{path}: no such cache; run `fr-mer preprocess` or `fr-mer import-ststnet`")
    with open_for_reading(path) as f:
        if "schema_version" not in f.attrs or "samples" not in f:
            raise CacheError(f"{path}: not an fr-mer cache (no schema_version); run `fr-mer preprocess`")
        version = schema_version(f, path)
        check_layout(f, path)
        arrays = list(arrays)
        _check_version(path, version, arrays)
        samples = f["samples"]
        n = samples["key"].shape[0]
        check_lengths(samples, n, [*META_COLUMNS, *arrays], path)
        meta = _read_meta(samples, n)
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
        kept = [i for i, key in enumerate(meta["key"]) if key != RETIRED_KEY]
        if len(kept) < n:  # rows retired by a rerun that made their samples again
            meta = {name: [values[i] for i in kept] for name, values in meta.items()}
            loaded = {name: array[kept] for name, array in loaded.items()}
        failures = _read_failures(f, done=set(meta["key"]))
        check_content(path, meta, loaded, attrs)
        cache = Cache(
            path=path,
            schema_version=version,
            params=json_attribute(f, "params", path),
            software=json_attribute(f, "software", path),
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
