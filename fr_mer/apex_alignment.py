"""Apex faces of a cropped release, aligned by fr-mer's rule, with their landmarks.

``fr-mer import-ststnet --apex-faces DIR`` adds, per composite sample, the apex
face of HTNet's public release (224x224 colour crops, named
``{subject}_{clip}.jpg``; SMIC clips as on disk, ``s01_s1_ne_01.jpg``) to the
cache it writes. Each face goes through the same steps as
``fr-mer preprocess`` (:mod:`fr_mer.pipeline.align`): dlib's most confident
HOG face with the padded try of pre-cropped frames, the 68-point landmarks,
the similarity that puts the eye centres on the canonical template, a
grayscale warp to ``face_size``.

Fallback when the detector finds no face (documented in docs/models.md): the
image *is* a face crop (the release's detector already found the face, and on
the faces dlib does find its box covers the whole crop to within a tenth of
its side), so the landmarks are fitted in a box spanning the whole crop, and
the sample is flagged :data:`FACE_BOX_WHOLE_CROP`. Only when that fit is
unusable (eyes on one point) is the whole crop scaled onto the face, with NaN
landmarks and the flag :data:`~fr_mer.pipeline.align.NO_FACE_WHOLE_FRAME`,
as ``preprocess`` does.

Besides the aligned face (``apex_face``), its landmarks (``landmarks``, in
``apex_face`` pixels) and the matrix (``align_matrix``, crop -> face), the
cache gets ``flow_landmarks``: the same 68 points in the pixels of the
released 28x28 flow image. The release's flow and face images are two views
of one face crop (HTNet cuts its flow regions at landmarks found on the face
image resized to 28x28), so a crop point ``(x, y)`` of a ``W x H`` face is
``((x + 0.5) 28 / W - 0.5, (y + 0.5) 28 / H - 0.5)`` on the flow.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from fr_mer.pipeline.align import (
    NO_FACE_WHOLE_FRAME,
    FaceAligner,
    apply_matrix,
    eye_centres,
    whole_frame_matrix,
)
from fr_mer.pipeline.cache import ArraySpec
from fr_mer.pipeline.cache.schema import face_spec, landmarks_spec, matrix_spec
from fr_mer.pipeline.flow import DEFAULT_FEATURE_SIZE
from fr_mer.pipeline.labels import smic_disk_clip

#: Flag of a sample whose landmarks were fitted in a box spanning the whole crop.
FACE_BOX_WHOLE_CROP = "face_box_whole_crop"

#: Side of the released flow images, on whose pixel grid ``flow_landmarks`` lie.
FLOW_SIDE = DEFAULT_FEATURE_SIZE

#: Eye centres closer than this (pixels of the crop) make no usable similarity.
_MIN_EYE_DISTANCE = 2.0


def apex_face_names(dataset: str, subject: str, clip: str) -> list[str]:
    """Candidate file names of a sample's apex face in the release, most likely first.

    SMIC clips are named on disk with the unpadded subject number
    (``s1_ne_01``) where the composite list pads it (``s01_ne_01``).
    """
    names = [f"{subject}_{clip}.jpg"]
    if dataset == "smic":
        names.insert(0, f"{subject}_{smic_disk_clip(clip)}.jpg")
    return names


def find_apex_face(folder: Path, dataset: str, subject: str, clip: str) -> Path | None:
    for name in apex_face_names(dataset, subject, clip):
        path = folder / name
        if path.is_file():
            return path
    return None


def crop_to_flow(points: np.ndarray, shape: tuple[int, int], side: int = FLOW_SIDE) -> np.ndarray:
    """(N, 2) points of an (H, W) crop -> the same points on a ``side`` x ``side`` grid (pixel centres kept)."""
    h, w = shape[:2]
    scale = np.array([side / w, side / h])
    return ((np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)


@dataclasses.dataclass
class AlignedApex:
    """One aligned apex face: cache arrays and flags."""

    arrays: dict[str, np.ndarray]
    flags: list[str]


def apex_face_specs(face_size: int) -> dict[str, ArraySpec]:
    """The cache columns the apex-face import adds (docs/cache-format.md, docs/models.md)."""
    return {
        "apex_face": face_spec(face_size,
                               source="the release's apex face crop, aligned by fr-mer's rule (align_matrix)"),
        "landmarks": landmarks_spec("in apex_face"),
        "align_matrix": matrix_spec("release face crop px (x, y, 1) -> apex_face px (x, y)"),
        "flow_landmarks": landmarks_spec(f"on the {FLOW_SIDE}x{FLOW_SIDE} flow image"),
    }


def align_apex_face(aligner: FaceAligner, gray: np.ndarray, face_size: int) -> AlignedApex:
    """The aligned apex face of one grayscale face crop, its landmarks and flags (module docstring)."""
    flags: list[str] = []
    found = aligner.landmarks(gray, pre_cropped=True)
    if found is None:
        found = _landmarks_in_whole_crop(aligner, gray)
        flags.append(FACE_BOX_WHOLE_CROP)
    eyes = eye_centres(found)
    if np.linalg.norm(eyes[1] - eyes[0]) < _MIN_EYE_DISTANCE:
        flags.append(NO_FACE_WHOLE_FRAME)
        matrix = whole_frame_matrix(gray.shape, face_size)
        nowhere = np.full((68, 2), np.nan, dtype=np.float32)
        landmarks, flow_points = nowhere, nowhere
    else:
        matrix = aligner.transform(found, face_size)
        landmarks = apply_matrix(matrix, found)
        flow_points = crop_to_flow(found, gray.shape)
    face = aligner.warp(gray, matrix, face_size)
    arrays = {"apex_face": face, "landmarks": landmarks, "align_matrix": matrix, "flow_landmarks": flow_points}
    return AlignedApex(arrays, flags)


def _landmarks_in_whole_crop(aligner: FaceAligner, gray: np.ndarray) -> np.ndarray:
    import dlib

    _, predictor = aligner._models()
    h, w = gray.shape[:2]
    shape = predictor(np.ascontiguousarray(gray, dtype=np.uint8), dlib.rectangle(0, 0, w - 1, h - 1))
    return np.array([(q.x, q.y) for q in shape.parts()], dtype=np.float32)


def read_gray(path: Path) -> np.ndarray | None:
    """The image at ``path`` as 8-bit grayscale (OpenCV's BGR -> gray weights), or None when unreadable."""
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
