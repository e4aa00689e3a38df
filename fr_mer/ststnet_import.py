"""Convert STSTNet's released network inputs into an fr-mer cache.

The release (see data/README.md) holds one 28x28x3 uint8 PNG per sample,
named ``{subject}_{filename} .png`` (SAMM subjects padded to three digits, and a
space before ``.png``), whose channels read with OpenCV (BGR) are
[strain, v, u], each min-max scaled to 0..255 per sample. The cache stores them
as its ``flow`` column in fr-mer's channel order (u, v, strain), unchanged in
value, so the released STSTNet weights apply to it as they do to the images.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fr_mer.errors import ParameterError
from fr_mer.pipeline.cache import ArraySpec, CacheWriter
from fr_mer.pipeline.composite import read_composite_list
from fr_mer.pipeline.labels import CLASS_INDEX

FLOW_ATTRS = {
    "channels": "u,v,strain",
    "normalisation": "minmax255",
    "description": "STSTNet released inputs: TV-L1 onset->apex flow (u, v) and optical strain, "
                   "each channel min-max scaled to 0..255 per sample",
}


@dataclasses.dataclass
class ImportSummary:
    written: int
    skipped: int
    failed: dict[str, str]


def released_image_name(dataset: str, subject: str, clip: str) -> str:
    """File name of a sample in the release; canonical subjects are already padded as released."""
    return f"{subject}_{clip} .png"


def find_image(images: Path, dataset: str, subject: str, clip: str) -> Path | None:
    for name in (released_image_name(dataset, subject, clip), f"{subject}_{clip}.png"):
        path = images / name
        if path.is_file():
            return path
    return None


def import_ststnet(images: Path, labels: Path | None, out: Path, *, overwrite: bool = False,
                   on_sample: Callable[[str], None] | None = None) -> ImportSummary:
    images = Path(images)
    if not images.is_dir():
        raise ParameterError(f"--images {images}: no such folder (the release's flow images)")
    entries = read_composite_list(labels)
    params = {"source": "ststnet-import", "feature_size": 28, "normalisation": "minmax255"}
    failed: dict[str, str] = {}
    written = skipped = 0
    with CacheWriter(out, params=params, arrays={"flow": ArraySpec((3, 28, 28), "f4", FLOW_ATTRS)},
                     software={"opencv": cv2.__version__, "numpy": np.__version__},
                     overwrite=overwrite) as writer:
        done = writer.done_keys()
        for entry in entries:
            if on_sample is not None:
                on_sample(entry.key)
            if entry.key in done:
                skipped += 1
                continue
            path = find_image(images, entry.dataset, entry.subject, entry.clip)
            if path is None:
                reason = (f"{images / released_image_name(entry.dataset, entry.subject, entry.clip)}: "
                          f"missing (composite list row {entry.row})")
                failed[entry.key] = reason
                writer.append_failure(entry.key, reason)
                continue
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != (28, 28, 3):
                reason = f"{path}: unreadable or not a 28x28 colour image"
                failed[entry.key] = reason
                writer.append_failure(entry.key, reason)
                continue
            strain, v, u = (bgr[:, :, c].astype(np.float32) for c in range(3))
            writer.append(
                {"key": entry.key, "database": entry.dataset, "subject": entry.subject,
                 "clip": entry.clip, "emotion": entry.label, "label": CLASS_INDEX[entry.label],
                 "onset_frame": -1, "apex_frame": -1, "offset_frame": -1, "flags": "ststnet_import"},
                {"flow": np.stack([u, v, strain])},
            )
            written += 1
    return ImportSummary(written, skipped, failed)
