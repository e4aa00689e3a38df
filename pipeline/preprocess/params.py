"""The preprocessing parameters: everything that changes a cache sample's content.

:class:`PreprocessParams` (with :class:`ClipOptions`, :class:`DynamicImageOptions`,
:class:`~fr_mer.pipeline.flow.TVL1Params` and :class:`~fr_mer.pipeline.align.AlignParams`
inside it) is recorded in every cache's ``params`` attribute and in every checkpoint,
through :mod:`fr_mer.config`. One field is recorded differently from its value: the
landmark model is stored as ``{"file": name, "sha256": hex}``, not as a path, so the
same model file at another path gives the same params (docs/cache-format.md).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import platform
from pathlib import Path
from typing import Mapping

import cv2

from fr_mer.config import from_record, settings, to_record, with_added
from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_CLIP_FRAMES, MAX_IMAGE_SIDE, check_number
from fr_mer.pipeline.align import AlignParams, default_predictor_path
from fr_mer.pipeline.cache import ArraySpec
from fr_mer.pipeline.cache.schema import GREY_LEVELS, face_spec, flow_spec, landmarks_spec, matrix_spec
from fr_mer.pipeline.flow import (DEFAULT_FEATURE_SIZE, DEFAULT_FLOW_IMPLEMENTATION, DEFAULT_FLOW_SIZE,
                                  DEFAULT_NORMALISATION, FLOW_IMPLEMENTATIONS, NORMALISATIONS, TVL1Params)
from fr_mer.pipeline.headmotion import DEFAULT_METHOD, METHODS
from fr_mer.pipeline.readers import SMIC_APEX_RULES
from fr_mer.pipeline.temporal import DEFAULT_FRAMES_PER_SEGMENT


def check_int(name: str, value: object, minimum: int, maximum: int = MAX_IMAGE_SIDE) -> None:
    """Raise :class:`ParameterError` unless ``value`` is an integer in [``minimum``, ``maximum``] (bools refused);
    the maximum bounds the memory a sample takes (:mod:`fr_mer.limits`)."""
    check_number(name, value, low=minimum, high=maximum, integer=True)


def _check_choice(what: str, value: str, choices) -> None:
    if value not in choices:
        raise ParameterError(f"unknown {what} {value!r}: expected one of {', '.join(choices)}")


@settings
class ClipOptions:
    """``clip_frames``: the aligned clip onset..offset resampled to ``length`` frames of ``size`` px.

    Defaults: 16 frames of 112x112 (MERANet's reconstruction, seed-models spec).
    """

    length: int = 16
    size: int = 112

    def __post_init__(self) -> None:
        check_int("clip length", self.length, 2, MAX_CLIP_FRAMES)
        check_int("clip size", self.size, 16)


@settings
class DynamicImageOptions:
    """``dynamic_images``: DSSI (:func:`pipeline.temporal.dssi`) on the aligned clip.

    ``segments`` segment dynamic images then the global one, ``size`` px square,
    ``frames_per_segment`` frames sampled per segment (None: all).
    """

    segments: int = 3
    size: int = 112
    frames_per_segment: int | None = DEFAULT_FRAMES_PER_SEGMENT

    def __post_init__(self) -> None:
        check_int("dynamic-image segments", self.segments, 1, MAX_CLIP_FRAMES)
        check_int("dynamic-image size", self.size, 16)
        if self.frames_per_segment is not None:
            check_int("frames per segment", self.frames_per_segment, 2, MAX_CLIP_FRAMES)


@settings
class PreprocessParams:
    """Everything that changes a sample's content; :meth:`as_dict` is the cache's ``params``.

    Attributes:
        flow_size: side (px) of the aligned face on which TV-L1 runs; the face
            crop ``onset_face``/``apex_face`` has ``align.face_size``.
        feature_size: side of the ``flow`` model input (u, v, strain).
        normalisation: scaling of ``flow`` (:data:`pipeline.flow.NORMALISATIONS`).
        tvl1: TV-L1 solver parameters.
        flow_implementation: which TV-L1 computes the flow
            (:data:`pipeline.flow.FLOW_IMPLEMENTATIONS`: ``opencv`` or ``torch``, set by
            ``--flow-device``); the two agree to float rounding amplified by TV-L1
            (docs/tvl1-torch.md), yet a cache never mixes them. The torch device is
            not recorded: it changes no more than rounding.
        align: face crop and detection parameters.
        head_motion: compensation method (:data:`pipeline.headmotion.METHODS`).
        smic_apex: the rule SMIC clips were scanned with (``middle`` or ``spot``);
            recorded so caches made with the two rules are never mixed.
        clip, dynamic_images: the clip models' inputs; None (the default) leaves
            them out, so a user of the flow models does not pay for them.
        predictor: dlib's 68-point shape predictor file (None: the one of
            ``face-recognition-models``); the cache records its name and sha256.
    """

    flow_size: int = DEFAULT_FLOW_SIZE
    feature_size: int = DEFAULT_FEATURE_SIZE
    normalisation: str = DEFAULT_NORMALISATION
    tvl1: TVL1Params = dataclasses.field(default_factory=TVL1Params)
    flow_implementation: str = DEFAULT_FLOW_IMPLEMENTATION
    align: AlignParams = dataclasses.field(default_factory=AlignParams)
    head_motion: str = DEFAULT_METHOD
    smic_apex: str = "middle"
    clip: ClipOptions | None = None
    dynamic_images: DynamicImageOptions | None = None
    predictor: str | None = None

    def __post_init__(self) -> None:
        check_int("flow size", self.flow_size, 16)
        check_int("feature size", self.feature_size, 1)
        check_int("face size", self.align.face_size, 8)
        _check_choice("normalisation", self.normalisation, NORMALISATIONS)
        _check_choice("flow implementation", self.flow_implementation, FLOW_IMPLEMENTATIONS)
        _check_choice("head-motion method", self.head_motion, METHODS)
        _check_choice("SMIC apex rule", self.smic_apex, SMIC_APEX_RULES)
        if self.predictor is not None and not Path(self.predictor).is_file():
            raise ParameterError(
                f"{self.predictor}: landmark model not found; pass the path of dlib's "
                "shape_predictor_68_face_landmarks.dat, or leave the option out to use the packaged one"
            )

    @property
    def face_size(self) -> int:
        return self.align.face_size

    @property
    def predictor_path(self) -> Path:
        return Path(self.predictor) if self.predictor else Path(default_predictor_path())

    def as_dict(self) -> dict[str, object]:
        """JSON-ready record (the cache's ``params`` attribute): :func:`~fr_mer.config.to_record`,
        with the landmark model as ``{"file", "sha256"}``."""
        predictor = self.predictor_path
        return {**to_record(self), "predictor": {"file": predictor.name, "sha256": _file_sha256(str(predictor))}}

    @classmethod
    def from_dict(cls, recorded: Mapping[str, object], *, predictor: str | None = None,
                  source: str = "the recorded preprocessing params") -> "PreprocessParams":
        """The params :meth:`as_dict` recorded (a cache's or a checkpoint's), to preprocess alike.

        The landmark model is not stored by path: ``predictor`` (None: the
        packaged one) must be the file whose sha256 was recorded. Raises
        :class:`~fr_mer.errors.ParameterError` naming ``source``.
        """
        if not isinstance(recorded, Mapping):
            raise ParameterError(f"{source}: expected a mapping of preprocessing params, "
                                 f"found {type(recorded).__name__}")
        values = with_added(recorded, PARAMS_ADDED)
        model = values.pop("predictor", None)
        params = from_record(cls, {**values, "predictor": predictor}, source=source)
        if isinstance(model, Mapping) and model.get("sha256"):
            found = _file_sha256(str(params.predictor_path))
            if found != model["sha256"]:
                raise ParameterError(
                    f"the recorded landmark model ({model.get('file')}, sha256 {str(model['sha256'])[:12]}...) "
                    f"is not {params.predictor_path} (sha256 {found[:12]}...); pass the recorded file"
                )
        return params

    def array_specs(self) -> dict[str, ArraySpec]:
        """The cache's array columns for these parameters (docs/cache-format.md)."""
        s, f = self.face_size, self.feature_size
        specs = {
            "flow": flow_spec(f, normalisation=self.normalisation,
                              normalisation_description=NORMALISATIONS[self.normalisation], flow_size=self.flow_size,
                              units=FLOW_UNITS[self.normalisation],
                              direction="onset -> apex; u +x (right), v +y (down)"),
            "onset_face": face_spec(s),
            "apex_face": face_spec(s, transform="the onset's (align_matrix), no head-motion compensation"),
            "landmarks": landmarks_spec("in onset_face"),
            "align_matrix": matrix_spec("onset frame px (x, y, 1) -> onset_face px (x, y)"),
        }
        if self.clip:
            c = self.clip
            specs["clip_frames"] = ArraySpec((c.length, c.size, c.size), "uint8", {
                "units": GREY_LEVELS,
                "frames": "onset..offset, linear interpolation in time to `length` frames",
                "transform": "align_matrix rescaled to the crop size (pipeline.align.rescale_matrix)",
            })
        if self.dynamic_images:
            d = self.dynamic_images
            specs["dynamic_images"] = ArraySpec((d.segments + 1, d.size, d.size), "float32", {
                "order": f"{d.segments} segment dynamic images, then the global one",
                "weights": "approximate rank pooling a_t = 2t - T - 1, times 6 / (T (T + 1))",
                "units": "grey levels of change over the window",
                "frames_per_segment": "all" if d.frames_per_segment is None else d.frames_per_segment,
            })
        return specs


#: Params a cache made by an older fr-mer (of the same schema version) may lack, with the value
#: such a cache was made with (nested for the settings inside ``params``): the
#: :class:`~fr_mer.pipeline.cache.CacheWriter` compares them so, and resumes that cache, and
#: :meth:`PreprocessParams.from_dict` reads an older cache's or checkpoint's record so.
PARAMS_ADDED = {"flow_implementation": DEFAULT_FLOW_IMPLEMENTATION, "align": {"crop": "template"}}

#: The ``fr-mer preprocess`` option that sets each recorded param (named when a cache's differ).
PARAM_OPTIONS = {
    "flow_size": "--flow-size",
    "feature_size": "--feature-size",
    "normalisation": "--normalisation",
    "tvl1": "--tvl1",
    "flow_implementation": "--flow-device: opencv records 'opencv', cpu and cuda record 'torch'",
    "align": "--align (crop=auto|frame|template, eye_distance=...), --face-size",
    "head_motion": "--head-motion",
    "smic_apex": "--smic-apex",
    "clip": "--with-clip, --clip-length, --clip-size",
    "dynamic_images": "--with-dynamic-images, --di-segments, --di-size, --di-frames-per-segment",
    "predictor": "--landmarks-model",
}

#: The ``flow`` column's units per normalisation (recorded as its ``units`` attribute): raw values
#: are in pixels of the flow-size crop, so ``u / flow_size`` is the scale-free unit (face side).
FLOW_UNITS = {
    "minmax255": "0..255 per channel and sample (the motion's magnitude and the u:v ratio are not kept)",
    "none": "u, v: px of the flow_size crop (divide by flow_size for fractions of the face side); "
            "strain: px/px",
}


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of what produced a cache (its ``software`` attribute)."""
    versions = {"python": platform.python_version(), "opencv": cv2.__version__}
    for label, dist in (
        ("fr-mer", "fr-mer"),
        ("dlib", "dlib-bin"),
        ("numpy", "numpy"),
        ("h5py", "h5py"),
        ("joblib", "joblib"),
        ("torch", "torch"),
    ):
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    import dlib
    import h5py

    versions["dlib"] = dlib.__version__
    versions["hdf5"] = h5py.version.hdf5_version
    return versions
