"""The cache's layout as data: its version, its columns and their widths, and the checks of both.

The layout itself is described in :mod:`fr_mer.pipeline.cache` and docs/cache-format.md.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from fr_mer.pipeline.cache.files import CacheError

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
    "objective_class": "i1",  # MEGC2018 objective class 1-7, -1 when none
    "source": "S16",  # fingerprint of the clip's frame files (pipeline.frame_checks.frames_fingerprint), "" when none
}
#: Metadata columns added within version 3 (which was never released without them):
#: name -> the value a cache written before the column existed reads as.
LATER_META_COLUMNS: dict[str, int | str] = {"objective_class": -1, "source": ""}
FAILURE_COLUMNS = {"key": f"S{KEY_WIDTH}", "reason": f"S{REASON_WIDTH}"}
#: The key of a row taken out of the cache (a sample whose sheet row changed, made again in a new row):
#: readers skip it.
RETIRED_KEY = ""
#: The columns that come from a sample's sheet row: a rerun makes a sample again when one differs.
SOURCE_COLUMNS = ("emotion", "label", "onset_frame", "apex_frame", "offset_frame", "objective_class", "source")
#: The writing run's record (JSON: state "writing" or "finished", pid, host, started, finished): a dataset
#: of one fixed-width string, so that it can be rewritten in SWMR mode. A cache without it was written
#: before it existed and is read as finished.
RUN_COLUMN = "run"
RUN_WIDTH = 512


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """A per-sample array column: shape of one sample, dtype, descriptive attributes."""

    shape: tuple[int, ...]
    dtype: str
    attrs: Mapping[str, object] = dataclasses.field(default_factory=dict)


#: Attributes of the columns that more than one writer makes (``fr-mer preprocess``,
#: ``fr-mer import-ststnet --apex-faces``): described once, here.
FLOW_CHANNELS = "u,v,strain"
GREY_LEVELS = "grey level 0..255"
LANDMARK_POINTS = "dlib 68-point (iBUG 300-W), 0-based"


def flow_spec(side: int, **attrs: object) -> ArraySpec:
    """The ``flow`` column: (3, side, side) float32, channels u, v, strain."""
    return ArraySpec((3, side, side), "float32", {"channels": FLOW_CHANNELS, **attrs})


def face_spec(side: int, **attrs: object) -> ArraySpec:
    """A face crop column (``onset_face``, ``apex_face``): (side, side) uint8 grey levels."""
    return ArraySpec((side, side), "uint8", {"units": GREY_LEVELS, **attrs})


def landmarks_spec(grid: str) -> ArraySpec:
    """A landmarks column: (68, 2) float32 px (x, y) ``grid`` (e.g. ``in onset_face``), NaN without a face."""
    return ArraySpec((68, 2), "float32", {"units": f"px (x, y) {grid}; NaN when no face was found",
                                          "points": LANDMARK_POINTS})


def matrix_spec(maps: str) -> ArraySpec:
    """An alignment matrix column: (2, 3) float32, what it ``maps`` to what."""
    return ArraySpec((2, 3), "float32", {"maps": maps})


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def encode(text: object, width: int, column: str) -> bytes:
    data = str(text).encode("utf-8")
    if len(data) > width:
        raise CacheError(f"{column} value {text!r} is longer than {width} bytes")
    return data


def decode(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values]


def schema_version(f: h5py.File, path: Path) -> int:
    value = f.attrs.get("schema_version")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CacheError(
            f"{path}: schema_version {value!r} is not a version number: not an fr-mer cache, or a damaged "
            "one; make it again with `fr-mer preprocess`"
        ) from None


def check_layout(f: h5py.File, path: Path) -> None:
    """Refuse a file that lacks a column every cache has, naming it."""
    missing = [f"samples/{name}" for name in META_COLUMNS
               if f"samples/{name}" not in f and name not in LATER_META_COLUMNS]
    missing += [f"failures/{name}" for name in FAILURE_COLUMNS if f"failures/{name}" not in f]
    if missing:
        raise CacheError(
            f"{path}: lacks {', '.join(missing)}: a damaged or foreign file, not a whole fr-mer cache; "
            "make it again with `fr-mer preprocess` into a new --out"
        )
