"""Appending samples to a cache, resumably and crash-safely (:class:`CacheWriter`)."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from fr_mer.config import with_added
from fr_mer.pipeline.cache.files import (CacheError, CacheParamsError, WriterLock, check_complete,
                                         check_replaceable, check_writable)
from fr_mer.pipeline.cache.trust import json_attribute
from fr_mer.pipeline.cache.schema import (
    FAILURE_COLUMNS,
    KEY_WIDTH,
    LATER_META_COLUMNS,
    META_COLUMNS,
    REASON_WIDTH,
    RETIRED_KEY,
    RUN_COLUMN,
    RUN_WIDTH,
    SCHEMA_VERSION,
    SHIFTED_COLUMNS,
    SOURCE_COLUMNS,
    ArraySpec,
    canonical_json,
    check_layout,
    decode,
    encode,
    schema_version,
)


def _cut(text: object, width: int) -> bytes:
    """``text`` as UTF-8, cut to ``width`` bytes at a character boundary."""
    return str(text).encode("utf-8")[:width].decode("utf-8", "ignore").encode("utf-8")


def failure_key(key: str) -> bytes:
    """The ``failures/key`` value of ``key``: cut to the key width when longer."""
    return _cut(key, KEY_WIDTH)


def _meta_value(meta: Mapping[str, object], name: str, dtype: str) -> object:
    """One metadata value as its column stores it; :class:`CacheError` when it does not fit."""
    value = meta.get(name, "" if name == "flags" else None)
    if value is None:
        value = -1 if dtype.startswith("i") else ""
    if isinstance(value, (list, tuple, set)):
        value = ",".join(sorted(value))
    if dtype.startswith("S"):
        return encode(value, int(dtype[1:]), name)
    info = np.iinfo(np.dtype(dtype))
    if not info.min <= int(value) <= info.max:
        raise CacheError(
            f"sample {meta.get('key')}: {name} {value} does not fit the cache's {np.dtype(dtype).name} column "
            f"({info.min}..{info.max})"
        )
    return int(value)


def _check_out(path: Path) -> None:
    """Refuse an output path that cannot be a cache file, naming it."""
    if path.is_dir():
        raise CacheError(f"{path}: is a folder; pass the path of a cache file (e.g. {path / 'cache.h5'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CacheError(f"{path}: {parent} is a file, not a folder; choose another --out")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{path}: cannot create its folder ({exc.strerror}); choose another --out") from None


class CacheWriter:
    """Appends samples to a cache, resumably.

    ``params`` must describe everything that changes the samples' content; a
    cache made with other params is refused (``overwrite=True`` starts afresh),
    so samples made two ways are never mixed. ``params_added``: params a cache
    written before they existed lacks, with the value it was made with (it is
    compared so). ``options``: what sets each param, named in the refusal.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        params: Mapping[str, object],
        arrays: Mapping[str, ArraySpec],
        software: Mapping[str, object] | None = None,
        overwrite: bool = False,
        params_added: Mapping[str, object] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.params = json.loads(canonical_json(params))
        self._params_added = json.loads(canonical_json(dict(params_added or {})))
        self._options = dict(options or {})
        self.arrays = dict(arrays)
        _check_out(self.path)
        self._lock = WriterLock(self.path)
        try:
            if overwrite and self.path.exists():
                check_replaceable(self.path)
                check_writable(self.path.parent)
                self.path.unlink()
            if self.path.exists():
                check_complete(self.path)
                check_writable(self.path)
                self._open_existing()
            else:
                self._create(software or {})
            self._started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self._write_run("writing")
            self._file.swmr_mode = True
        except BaseException:
            self._lock.release()
            raise
        self._samples = self._file["samples"]
        self._failures = self._file["failures"]

    def _difference(self, key: str, stored: Mapping[str, object]) -> str:
        """``key`` differs, with both values when they are short, and the option that sets it."""
        text = f"{key} differs"
        before, now = stored.get(key), self.params.get(key)
        if all(value is None or isinstance(value, (str, int, float)) for value in (before, now)):
            text = f"{key} {before!r} in the cache, {now!r} now"
        option = self._options.get(key)
        return f"{text} (set by {option})" if option else text

    # -- opening ---------------------------------------------------------
    def _create(self, software: Mapping[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.path, "w", libver="latest")
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["params"] = canonical_json(self.params)
        f.attrs["software"] = canonical_json(software)
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
                ds.attrs[key] = value if isinstance(value, (int, float, str)) else canonical_json(value)
        failures = f.create_group("failures")
        for name, dtype in FAILURE_COLUMNS.items():
            failures.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(64,))
        f.flush()
        self._file = f

    def _open_existing(self) -> None:
        try:
            f = h5py.File(self.path, "a", libver="latest")
        except PermissionError:
            check_writable(self.path)
            raise CacheError(f"{self.path}: permission denied; make it writable or use another --out") from None
        except OSError:
            # A writer killed in SWMR mode leaves the "open for writing" flag set;
            # the data is consistent, so copy the committed rows to a fresh file.
            # Safe only because we hold the writer lock: no live writer has it open.
            _recover(self.path)
            try:
                f = h5py.File(self.path, "a", libver="latest")
            except OSError as exc:
                raise CacheError(
                    f"{self.path}: cannot open the cache ({exc}); delete it or pass --overwrite"
                ) from exc
        try:
            version = schema_version(f, self.path)
            check_layout(f, self.path)
        except CacheError:
            f.close()
            raise
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
        stored = with_added(json_attribute(f, "params", self.path), self._params_added)
        if stored != self.params:
            f.close()
            diff = sorted(
                k for k in set(stored) | set(self.params) if stored.get(k) != self.params.get(k)
            )
            raise CacheParamsError(
                f"{self.path}: made with other parameters ({'; '.join(self._difference(k, stored) for k in diff)}); "
                "samples made two ways are never mixed: use another --out, the cache's settings, or --overwrite "
                "to recompute everything", stored, diff
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
        return set(decode(self._samples["key"][...])) - {RETIRED_KEY}

    def stored_rows(self) -> dict[str, dict[str, object]]:
        """Each cached sample's source fields (:data:`SOURCE_COLUMNS`) by key, to tell a row whose sheet
        entry changed since it was cached."""
        n = len(self)
        columns = {name: self._samples[name][:n] for name in SOURCE_COLUMNS if name in self._samples}
        rows = {}
        for i, key in enumerate(decode(self._samples["key"][:n])):
            if key != RETIRED_KEY:
                rows[key] = {name: (values[i].decode("utf-8", "replace") if isinstance(values[i], bytes)
                                    else int(values[i])) for name, values in columns.items()}
        return rows

    def retire(self, key: str) -> None:
        """Take sample ``key`` out of the cache (its row's key becomes :data:`RETIRED_KEY`, which readers skip),
        so that a rerun makes it again. Crash-safe: killed after this, the sample is missing, never stale."""
        keys = decode(self._samples["key"][: len(self)])
        for row in [i for i, stored in enumerate(keys) if stored == key]:
            self._samples["key"][row] = encode(RETIRED_KEY, KEY_WIDTH, "key")
        self._file.flush()

    # -- writing -------------------------------------------------------------
    def append(self, meta: Mapping[str, object], arrays: Mapping[str, np.ndarray]) -> None:
        """Commit one sample. ``meta`` holds every META_COLUMNS entry but ``flags``.

        Every value is checked before any column grows, so a refused sample
        (:class:`CacheError`) leaves the file as it was.
        """
        missing = [n for n in self.arrays if n not in arrays]
        if missing:
            raise CacheError(f"sample {meta.get('key')}: arrays {missing} missing")
        values: dict[str, object] = {}
        for name, spec in self.arrays.items():
            value = np.asarray(arrays[name], dtype=spec.dtype)
            if value.shape != spec.shape:
                raise CacheError(
                    f"sample {meta.get('key')}: {name} has shape {value.shape}, expected {spec.shape}"
                )
            values[name] = value
        for name, dtype in META_COLUMNS.items():
            values[name] = _meta_value(meta, name, dtype)
        n = len(self)
        for name, value in values.items():  # key last: the row is committed when key has grown
            if name == "key" or (name in LATER_META_COLUMNS and name not in self._samples):
                continue  # an older cache without the column: its samples read as the default
            ds = self._samples[name]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        key = self._samples["key"]
        key.resize(n + 1, axis=0)
        key[n] = values["key"]
        self._file.flush()

    def append_failure(self, key: str, reason: str) -> None:
        """Record that sample ``key`` could not be made; a key too long for its column is cut (the reason
        keeps it whole), so a failure is always recorded."""
        if len(str(key).encode("utf-8")) > KEY_WIDTH:
            reason = f"{key}: {reason}"
        # cut to the column at a character boundary, so that the reason decodes
        reason_bytes = str(reason).encode("utf-8")[:REASON_WIDTH].decode("utf-8", "ignore").encode("utf-8")
        n = self._failures["key"].shape[0]
        for name, value in (("reason", reason_bytes), ("key", failure_key(key))):
            ds = self._failures[name]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        self._file.flush()

    def _write_run(self, state: str) -> None:
        """Record this run's state in the cache (``writing`` from the start, ``finished`` by :meth:`finish`):
        a reader tells a cache still being written, or left by a killed run, from a finished one."""
        if RUN_COLUMN not in self._file:  # created before SWMR mode, which adds no dataset
            self._file.create_dataset(RUN_COLUMN, shape=(1,), dtype=f"S{RUN_WIDTH}")
        record = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "started": self._started}
        if state == "finished":
            record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._file[RUN_COLUMN][0] = encode(canonical_json(record), RUN_WIDTH, RUN_COLUMN)
        self._file.flush()

    def finish(self) -> None:
        """Mark the run finished: every sample it was given is in the cache or among its failures."""
        if self._file.id.valid:
            self._write_run("finished")

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
        self._lock.release()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:  # a with-block that ran to its end finished its run
            self.finish()
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
