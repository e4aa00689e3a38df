"""Convert STSTNet's released network inputs into an fr-mer cache.

The release (see data/README.md) holds one 28x28x3 uint8 PNG per sample,
named ``{subject}_{filename} .png`` (SAMM subjects padded to three digits, and a
space before ``.png``), whose channels read with OpenCV (BGR) are
[strain, v, u], each min-max scaled to 0..255 per sample. The cache stores them
as its ``flow`` column in fr-mer's channel order (u, v, strain), unchanged in
value, so the released STSTNet weights apply to it as they do to the images.

With ``apex_faces`` (a folder of the release's apex face crops), each sample
also gets its apex face aligned by fr-mer's rule and its landmarks
(:mod:`fr_mer.apex_alignment`), for the apex-frame and landmark-region models.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fr_mer.apex_alignment import (FLOW_SIDE, align_apex_face, apex_face_names, apex_face_specs, find_apex_face,
                                   read_gray)
from fr_mer.config import to_record
from fr_mer.errors import ParameterError
from fr_mer.pipeline.align import AlignParams, FaceAligner
from fr_mer.pipeline.cache import CacheWriter
from fr_mer.pipeline.cache.schema import flow_spec
from fr_mer.pipeline.composite import read_composite_list
from fr_mer.pipeline.labels import CLASS_INDEX
from fr_mer.pipeline.preprocess.params import PreprocessParams
from fr_mer.pipeline.preprocess.sample import cache_flags

FLOW_ATTRS = {
    "normalisation": "minmax255",
    "description": "STSTNet released inputs: TV-L1 onset->apex flow (u, v) and optical strain, "
                   "each channel min-max scaled to 0..255 per sample",
}


@dataclasses.dataclass
class ImportSummary:
    written: int
    skipped: int
    failed: dict[str, str]
    flags: Counter = dataclasses.field(default_factory=Counter)

    def lines(self, out: Path) -> list[str]:
        """The summary ``fr-mer import-ststnet`` prints (as ``fr-mer preprocess`` does: counts, flags, failures)."""
        lines = [f"{out}: {self.written} written, {self.skipped} already there, {len(self.failed)} failed"]
        if self.flags:
            lines.append("flags: " + ", ".join(f"{k} {v}" for k, v in sorted(self.flags.items())))
        if self.failed:
            lines.append("failed:")
            lines.extend(f"  {key}: {reason}" for key, reason in sorted(self.failed.items()))
        return lines


def released_image_name(dataset: str, subject: str, clip: str) -> str:
    """File name of a sample in the release; canonical subjects are already padded as released."""
    return f"{subject}_{clip} .png"


def find_image(images: Path, dataset: str, subject: str, clip: str) -> Path | None:
    for name in (released_image_name(dataset, subject, clip), f"{subject}_{clip}.png"):
        path = images / name
        if path.is_file():
            return path
    return None


def import_ststnet(images: Path, labels: Path | None, out: Path, *, apex_faces: Path | None = None,
                   align: AlignParams = AlignParams(), predictor: str | None = None, overwrite: bool = False,
                   on_sample: Callable[[str], None] | None = None) -> ImportSummary:
    """Write the cache ``out`` from the release's flow images (and apex faces); resumable.

    Args:
        images: folder of the released 28x28 flow images.
        labels: composite list (None: the official one).
        apex_faces: folder of the release's apex face crops (None: flow only).
        align: face crop and detection parameters (``face_size`` is the side
            of the stored ``apex_face``), as for ``fr-mer preprocess``.
        predictor: dlib's 68-point model file (None: the packaged one).
    """
    images = Path(images)
    if not images.is_dir():
        raise ParameterError(f"--images {images}: no such folder (the release's flow images)")
    if apex_faces is not None and not Path(apex_faces).is_dir():
        raise ParameterError(f"--apex-faces {apex_faces}: no such folder (the release's apex face crops)")
    entries = read_composite_list(labels)
    params = {"source": "ststnet-import", "feature_size": FLOW_SIDE, "normalisation": "minmax255"}
    arrays = {"flow": flow_spec(FLOW_SIDE, **FLOW_ATTRS)}
    aligner = None
    if apex_faces is not None:
        apex_faces = Path(apex_faces)
        face_params = PreprocessParams(align=align, predictor=predictor)
        params["apex_faces"] = {"align": to_record(align), "predictor": face_params.as_dict()["predictor"]}
        arrays.update(apex_face_specs(align.face_size))
        aligner = FaceAligner(align, predictor_path=face_params.predictor_path)
    summary = ImportSummary(0, 0, {})
    with CacheWriter(out, params=params, arrays=arrays,
                     software={"opencv": cv2.__version__, "numpy": np.__version__},
                     overwrite=overwrite) as writer:
        done = writer.done_keys()
        for entry in entries:
            if on_sample is not None:
                on_sample(entry.key)
            if entry.key in done:
                summary.skipped += 1
                continue
            sample = _sample(entry, images, apex_faces, aligner, align.face_size)
            if isinstance(sample, str):
                summary.failed[entry.key] = sample
                writer.append_failure(entry.key, sample)
                continue
            sample_arrays, flags = sample
            flags = cache_flags(["ststnet_import", *flags])
            writer.append(
                {"key": entry.key, "database": entry.dataset, "subject": entry.subject,
                 "clip": entry.clip, "emotion": entry.label, "label": CLASS_INDEX[entry.label],
                 "onset_frame": -1, "apex_frame": -1, "offset_frame": -1, "flags": flags},
                sample_arrays,
            )
            summary.flags.update(f for f in flags if f != "ststnet_import")
            summary.written += 1
    return summary


def _sample(entry, images: Path, apex_faces: Path | None, aligner: FaceAligner | None,
            face_size: int) -> tuple[dict[str, np.ndarray], list[str]] | str:
    """One sample's arrays and flags, or the reason it cannot be made."""
    path = find_image(images, entry.dataset, entry.subject, entry.clip)
    if path is None:
        return (f"{images / released_image_name(entry.dataset, entry.subject, entry.clip)}: "
                f"missing (composite list row {entry.row})")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (FLOW_SIDE, FLOW_SIDE, 3):
        return f"{path}: unreadable or not a {FLOW_SIDE}x{FLOW_SIDE} colour image"
    strain, v, u = (bgr[:, :, c].astype(np.float32) for c in range(3))
    arrays = {"flow": np.stack([u, v, strain])}
    if apex_faces is None:
        return arrays, []
    face_path = find_apex_face(apex_faces, entry.dataset, entry.subject, entry.clip)
    if face_path is None:
        names = " or ".join(apex_face_names(entry.dataset, entry.subject, entry.clip))
        return f"{apex_faces}: no apex face {names} (composite list row {entry.row})"
    gray = read_gray(face_path)
    if gray is None or min(gray.shape) < 8:
        return f"{face_path}: unreadable or smaller than 8x8 pixels"
    aligned = align_apex_face(aligner, gray, face_size)
    arrays.update(aligned.arrays)
    return arrays, aligned.flags
