"""From the HDF5 cache to tensors on the training device, read once.

A model names the cache columns it reads (``Model.inputs``); for ``flow`` it
also names the channels and their order. :func:`load_dataset` reads exactly
those columns, selects the samples of a protocol, and moves everything to the
device in one copy: training then indexes batches on the device with no
per-step host-to-device transfer and no DataLoader workers. Columns stored as
uint8 (grey-level faces and clip frames) stay uint8 on the device, a quarter
of float32's memory, and :meth:`DeviceDataset.batch` converts each batch to
float32 (the same values: 0..255 are exact in float32).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from fr_mer.errors import ParameterError
from fr_mer.pipeline.align import rescale_points
from fr_mer.pipeline.cache import Cache, CacheError, read_cache
from fr_mer.pipeline.composite import read_composite_list
from fr_mer.pipeline.flow import NORMALISATIONS, UNRECORDED_NORMALISATION
from fr_mer.pipeline.labels import (
    CLASSES,
    COMPOSITE_SPACE,
    DATABASE_TITLES,
    MEGC2018_DATABASES,
    LabelSpace,
)
from fr_mer.protocols import PROTOCOLS


#: Stored dtypes kept as they are on the device (converted to float32 per batch); others become float32.
STORED_DTYPES = (np.uint8,)


@dataclasses.dataclass
class DeviceDataset:
    """Samples of one protocol, on one device."""

    inputs: dict[str, torch.Tensor]  # column -> (N, ...) as stored: float32, or uint8 (see STORED_DTYPES)
    labels: torch.Tensor  # (N,) int64 class index
    keys: list[str]
    databases: np.ndarray  # (N,) str
    subjects: np.ndarray  # (N,) str, canonical per database
    cache: Cache
    missing: list[str]  # protocol samples absent from the cache (failed or never made)
    protocol: str = "composite"
    label_space: LabelSpace = COMPOSITE_SPACE
    #: How the cache stores ``flow`` (:func:`flow_normalisation`): what a flow model's input normalisation follows.
    flow_normalisation: str = UNRECORDED_NORMALISATION

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``index`` of every input, as float32."""
        return {name: tensor.index_select(0, index).to(torch.float32) for name, tensor in self.inputs.items()}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ParameterError(f"--device {name}: fr-mer runs on auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("--device cuda was asked for, but torch sees no CUDA device; use --device auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ParameterError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    return device


def flow_normalisation(cache: Cache) -> str:
    """How ``cache`` stores its ``flow`` column: its params' ``normalisation`` (``none``: raw, or ``minmax255``).

    ``fr-mer import-ststnet`` records minmax255; a cache whose params record
    none was made before the choice existed, when minmax255 was the only one.
    """
    value = cache.params.get("normalisation", UNRECORDED_NORMALISATION)
    if value not in NORMALISATIONS:
        raise CacheError(f"{cache.path}: records the flow normalisation {value!r}, which this fr-mer does not "
                         f"know ({', '.join(sorted(NORMALISATIONS))}); make the cache again with `fr-mer preprocess`")
    return str(value)


def flow_channel_index(cache_path: Path, attrs: Mapping[str, object], wanted: Sequence[str]) -> list[int]:
    stored = [c.strip() for c in str(attrs.get("channels", "u,v,strain")).split(",")]
    missing = [c for c in wanted if c not in stored]
    if missing:
        raise CacheError(
            f"{cache_path}: the flow column holds channels {stored}, the model needs {list(wanted)}"
        )
    return [stored.index(c) for c in wanted]


#: The 68 landmarks on the flow input's pixel grid (models that cut regions of the flow read it).
FLOW_LANDMARKS = "flow_landmarks"


def _columns_to_read(cache_path: Path, wanted: Sequence[str]) -> list[str]:
    """The cache columns holding ``wanted``: ``flow_landmarks`` comes from ``landmarks`` where not stored.

    ``fr-mer import-ststnet --apex-faces`` stores ``flow_landmarks`` (its flow and
    face crops differ); ``fr-mer preprocess`` computes the flow on the aligned face
    crop itself, so there the face landmarks, rescaled, are the flow's.
    """
    if FLOW_LANDMARKS not in wanted:
        return list(wanted)
    if FLOW_LANDMARKS in read_cache(cache_path).available_arrays:
        return list(wanted)
    return [c for c in wanted if c != FLOW_LANDMARKS] + ["landmarks", "flow"]


def _flow_landmarks(cache: Cache) -> np.ndarray:
    """(N, 68, 2) landmarks on the flow grid: stored, or the face crop's rescaled to the flow's side."""
    if FLOW_LANDMARKS in cache.arrays:
        return cache.arrays[FLOW_LANDMARKS]
    face_size = int(cache.params.get("align", {}).get("face_size", 0))
    if face_size <= 0:
        raise CacheError(f"{cache.path}: no flow_landmarks column and no recorded face size to derive them")
    return rescale_points(cache.arrays["landmarks"], face_size, cache.arrays["flow"].shape[-1])


def sample_labels(cache: Cache, label_space: LabelSpace = COMPOSITE_SPACE) -> np.ndarray:
    """Each cached sample's class index in ``label_space``, -1 where the space drops it."""
    meta = cache.meta
    return np.array([
        label_space.label(database, emotion, objective if objective >= 0 else None, cached)
        for database, emotion, objective, cached in zip(meta["database"], meta["emotion"],
                                                        meta["objective_class"], meta["label"])
    ], dtype=np.int64)


def cache_databases(cache: Cache) -> list[str]:
    """The databases of the cache's samples, sorted."""
    return sorted(set(cache.meta["database"]))


def single_database(cache: Cache) -> str:
    """The one database of the cache's samples (``--protocol loso`` without ``--database``)."""
    present = cache_databases(cache)
    if len(present) == 1:
        return present[0]
    if not present:
        raise CacheError(f"{cache.path}: holds no sample")
    raise ParameterError(f"--protocol loso: {cache.path} holds samples of {', '.join(present)}; "
                         "choose one with --database")


def _composite_rows(cache: Cache, labels: np.ndarray, composite_list: Path | None) -> tuple[list[int], list[str]]:
    entries = read_composite_list(composite_list)
    wanted = {e.key: e for e in entries}
    row_of = {k: i for i, k in enumerate(cache.keys)}
    rows, missing = [], []
    for key, entry in wanted.items():
        i = row_of.get(key)
        if i is None:
            missing.append(key)
            continue
        cached = CLASSES[labels[i]] if labels[i] >= 0 else "no class"
        if cached != entry.label:
            raise CacheError(
                f"{cache.path}: sample {key} is labelled {cached} in the cache but "
                f"{entry.label} in the composite list (row {entry.row}); rebuild the cache "
                "with the same --composite-list"
            )
        rows.append(i)
    if not rows:
        raise CacheError(
            f"{cache.path}: none of the composite list's samples is in this cache; "
            "check --composite-list (the demo's synthetic list differs from the official one)"
        )
    return rows, missing


def _in_key_order(cache: Cache, rows: np.ndarray) -> np.ndarray:
    """``rows`` ordered by their samples' keys (unique in a cache)."""
    keys = np.asarray(cache.keys, dtype=object)[rows]
    return rows[np.argsort(keys, kind="stable")].astype(np.int64)


def select_protocol(cache: Cache, protocol: str, database: str | None = None,
                    composite_list: Path | None = None,
                    labels: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Row indices of the protocol's samples in ``cache``, and the protocol keys missing from it.

    The rows come in an order set by the samples alone, never by the cache's row
    order: the composite list's order (``composite``, ``lodo``), else the sample
    keys' order. A cache's rows are in the order its samples were finished
    (``fr-mer preprocess --jobs N`` writes them as workers finish; a resumed run
    appends), and the training batches follow the selected order, so two caches
    of the same samples give the same figures only this way.

    ``labels``: the samples' classes in the run's label space (default: the
    cache's composite labels); samples the space drops (-1) are never selected.
    """
    if labels is None:
        labels = sample_labels(cache)
    dbs = np.asarray(cache.meta["database"])
    if protocol in ("composite", "lodo"):
        rows, missing = _composite_rows(cache, labels, composite_list)
        return np.asarray(rows, dtype=np.int64), missing
    if protocol == "loso":
        database = single_database(cache) if database is None else database
        if database not in DATABASE_TITLES:
            raise ParameterError(f"--database must be one of {', '.join(DATABASE_TITLES)}, got {database!r}")
        rows = np.flatnonzero((dbs == database) & (labels >= 0))
        if rows.size == 0:
            raise CacheError(f"{cache.path}: no labelled {database} samples in this cache")
        return _in_key_order(cache, rows), []
    if protocol in ("megc2018-cde", "megc2018-hde"):
        rows = np.flatnonzero(np.isin(dbs, MEGC2018_DATABASES) & (labels >= 0))
        present = {str(db) for db in dbs[rows]}
        if not present or (protocol == "megc2018-hde" and present != set(MEGC2018_DATABASES)):
            absent = sorted(set(MEGC2018_DATABASES) - present)
            raise CacheError(
                f"{cache.path}: --protocol {protocol} needs CASME II and SAMM samples with objective classes "
                f"1-5; none of {', '.join(absent)} has one (preprocess CASME II with --casme2-objective FILE "
                "or its 2019 coding sheet)"
            )
        return _in_key_order(cache, rows), []
    raise ParameterError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def load_dataset(cache_path: str | Path, model_inputs: Mapping[str, Sequence[str] | None],
                 device: torch.device, *, protocol: str = "composite", database: str | None = None,
                 composite_list: Path | None = None,
                 label_space: LabelSpace = COMPOSITE_SPACE) -> DeviceDataset:
    """Read the model's inputs for a protocol's samples and put them on ``device``."""
    cache_path = Path(cache_path)
    cache = read_cache(cache_path, arrays=sorted(set(_columns_to_read(cache_path, list(model_inputs)))))
    all_labels = sample_labels(cache, label_space)
    rows, missing = select_protocol(cache, protocol, database, composite_list, all_labels)
    inputs: dict[str, torch.Tensor] = {}
    for name, channels in model_inputs.items():
        array = _flow_landmarks(cache) if name == FLOW_LANDMARKS else cache.arrays[name]
        if channels is not None:
            array = array[:, flow_channel_index(cache_path, cache.array_attrs[name], channels)]
        selected = array[rows]
        dtype = selected.dtype if selected.dtype in STORED_DTYPES else np.float32
        inputs[name] = torch.from_numpy(np.ascontiguousarray(selected, dtype=dtype)).to(device)
    labels = torch.as_tensor(all_labels[rows], dtype=torch.int64, device=device)
    return DeviceDataset(
        inputs=inputs,
        labels=labels,
        keys=[cache.keys[i] for i in rows],
        databases=np.asarray(cache.meta["database"])[rows],
        subjects=np.asarray(cache.meta["subject"])[rows],
        cache=cache,
        missing=missing,
        protocol=protocol,
        label_space=label_space,
        flow_normalisation=flow_normalisation(cache),
    )
