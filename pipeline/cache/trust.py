"""Whether a cache's content can be trusted: a finished run, whole columns, unique keys, labels in
range, finite inputs, readable attributes.

:func:`check_content` runs inside :func:`~fr_mer.pipeline.cache.read_cache` on every read, so
no model, probe or evaluation ever sees a damaged cache; :func:`check_finished` is called by the
commands that read a cache (``evaluate``, ``train``, ``probe``) before any work, and refuses a
cache still being written, or left by a run that was killed, unless the user allows it.
Each refusal is a :class:`CacheError` naming the file and the samples or column.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from fr_mer.pipeline.cache.files import CacheError, open_for_reading, writer_alive
from fr_mer.pipeline.cache.schema import RUN_COLUMN, decode
from fr_mer.pipeline.labels import CLASSES

#: Array columns that are model inputs: a NaN or an infinity in them would be trained on and scored.
#: (Landmarks may hold NaN where a point was not found: they are not checked.)
FINITE_ARRAYS = ("flow", "dynamic_images", "clip_frames", "onset_face", "apex_face")


def _first(keys: list[str], count: int = 5) -> str:
    return ", ".join(keys[:count]) + (f" and {len(keys) - count} more" if len(keys) > count else "")


def json_attribute(f: h5py.File, name: str, path: Path) -> dict:
    """A JSON attribute of the file (``params``, ``software``) as a mapping, or a CacheError naming it."""
    text = f.attrs.get(name, "{}")
    try:
        value = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (TypeError, ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        raise CacheError(f"{path}: its {name!r} attribute is not a JSON mapping: a damaged or foreign cache; "
                         "make it again with `fr-mer preprocess` into a new --out")
    return value


def check_lengths(samples: h5py.Group, n: int, columns: list[str], path: Path) -> None:
    """Every column holds at least the ``n`` committed rows (``samples/key``'s)."""
    short = [f"samples/{name} ({samples[name].shape[0]} rows)" for name in columns
             if name in samples and samples[name].shape[0] < n]
    if short:
        raise CacheError(f"{path}: {', '.join(short)} shorter than samples/key ({n} rows): a damaged cache; "
                         "make it again with `fr-mer preprocess` into a new --out")


def check_content(path: Path, meta: Mapping[str, list], arrays: Mapping[str, np.ndarray],
                  attrs: Mapping[str, Mapping]) -> None:
    """Unique keys, labels in -1..len(CLASSES)-1, array shapes that fit their channels, finite inputs."""
    keys = meta["key"]
    repeated = [key for key, count in Counter(keys).items() if count > 1]
    if repeated:
        raise CacheError(f"{path}: samples stored more than once: {_first(repeated)} (each would be trained and "
                         "scored twice); make the cache again with `fr-mer preprocess` into a new --out")
    bad = [f"{key} ({label})" for key, label in zip(keys, meta["label"]) if not -1 <= label < len(CLASSES)]
    if bad:
        raise CacheError(f"{path}: labels outside -1..{len(CLASSES) - 1} (the class index, -1 for none): "
                         f"{_first(bad)}; make the cache again with `fr-mer preprocess`")
    for name, array in arrays.items():
        channels = attrs.get(name, {}).get("channels")
        if channels is not None and array.ndim >= 2:
            names = [c for c in str(channels).split(",") if c.strip()]
            if array.shape[1] != len(names):
                raise CacheError(f"{path}: samples/{name} holds {array.shape[1]} channels per sample, its "
                                 f"'channels' attribute names {len(names)} ({channels}): a damaged or foreign "
                                 "cache; make it again with `fr-mer preprocess`")
        if name in FINITE_ARRAYS and np.issubdtype(array.dtype, np.floating) and array.size:
            finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if not finite.all():
                bad_keys = [keys[i] for i in np.flatnonzero(~finite)]
                raise CacheError(f"{path}: samples/{name} holds NaN or infinite values in {len(bad_keys)} "
                                 f"sample(s): {_first(bad_keys)}; make them again (`fr-mer preprocess` into a "
                                 "new --out) or drop them from the protocol's list")


def run_state(path: str | Path) -> tuple[dict | None, int, int]:
    """The cache's run record (None for a cache written before it existed), its samples and its failures."""
    path = Path(path)
    with open_for_reading(path) as f:
        n_samples = f["samples/key"].shape[0] if "samples/key" in f else 0
        n_failures = f["failures/key"].shape[0] if "failures/key" in f else 0
        if RUN_COLUMN not in f:
            return None, n_samples, n_failures
        text = decode(f[RUN_COLUMN][:1])[0] if f[RUN_COLUMN].shape[0] else ""
    try:
        record = json.loads(text)
    except ValueError:
        record = {"state": "unknown"}
    return (record if isinstance(record, dict) else {"state": "unknown"}), n_samples, n_failures


def check_finished(path: str | Path, *, allow_incomplete: bool = False) -> str | None:
    """Refuse a cache whose writing run is not finished (its writer alive, or killed mid-run), naming the run
    and what it holds; with ``allow_incomplete`` return that description as a warning instead."""
    path = Path(path)
    if not path.is_file():
        return None  # read_cache names a missing file or a folder
    record, n_samples, n_failures = run_state(path)
    if record is None or record.get("state") == "finished":
        return None
    run = f"pid {record.get('pid', '?')} on {record.get('host', '?')}, started {record.get('started', '?')}"
    if writer_alive(path):
        how = f"is still being written (by {run})"
    else:
        how = f"was left unfinished by its writer ({run}: killed or interrupted)"
    holds = f"{n_samples} samples and {n_failures} failures so far"
    if allow_incomplete:
        return f"warning: {path} {how}; using its {holds} (--allow-incomplete)"
    raise CacheError(f"{path}: incomplete: it {how}, with {holds}; complete it by running the same "
                     "`fr-mer preprocess` again (after the writer ends), or pass --allow-incomplete to use "
                     "these samples")
