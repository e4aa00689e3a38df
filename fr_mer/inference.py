"""Predict with a trained checkpoint, through the preprocessing its cache was made with: one
onset/apex pair (:func:`predict_pair`), or a user's own clip, its apex spotted or given
(:func:`predict_clip`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from fr_mer.checkpoint import load_checkpoint
from fr_mer.data import flow_channel_index
from fr_mer.errors import FrMerError
from fr_mer.pipeline.frame_checks import exif_orientation
from fr_mer.pipeline.flow import UNRECORDED_NORMALISATION
from fr_mer.pipeline.labels import CLASSES
from fr_mer.pipeline.preprocess import (
    PairSample,
    PreprocessParams,
    SampleError,
    is_pre_cropped_path,
    process_pair,
    read_gray,
    spot_pair,
)
from fr_mer.pipeline.user_clip import read_user_clip


class PredictionError(FrMerError, ValueError):
    """A prediction that cannot be made: a checkpoint that cannot classify a single onset/apex pair,
    or onset and apex indices that do not fit the clip."""


@dataclasses.dataclass
class Prediction:
    probabilities: dict[str, float]
    predicted: str
    flags: list[str]
    params_note: str


@dataclasses.dataclass
class ClipPrediction(Prediction):
    """A clip's prediction and the frames it used: indices into the clip's frames (in order,
    from 0) and their names (file names, or ``frame N`` of a video)."""

    onset: int = 0
    apex: int = 0
    offset: int = 0
    apex_spotted: bool = False
    frame_names: tuple[str, str, str] = ("", "", "")  # onset, apex, offset


def _checkpoint(checkpoint: str | Path):
    """The model, its checkpoint's info, the preprocessing parameters to use and the note saying which."""
    model, info = load_checkpoint(checkpoint)
    recorded = {"normalisation": UNRECORDED_NORMALISATION, **(info.get("preprocess_params") or {})}
    if "flow_size" in recorded:
        params = PreprocessParams.from_dict(recorded, source=f"{checkpoint}: preprocess_params")
        note = "preprocessed with the checkpoint's recorded parameters"
    else:
        params = PreprocessParams(normalisation=recorded["normalisation"])
        note = ("the checkpoint records no fr-mer preprocessing (e.g. trained on imported STSTNet "
                f"inputs): default preprocessing used, flow normalisation {params.normalisation}")
    model.check_inputs(params.normalisation, str(checkpoint))
    specs = params.array_specs()
    for name in model.inputs:
        if name not in specs:
            raise PredictionError(f"{checkpoint}: model {info['model']!r} needs the {name!r} input, which a "
                                  "single onset/apex pair cannot provide")
    return model, info, params, note


def _classify(checkpoint: str | Path, model, info: dict, params: PreprocessParams,
              sample: PairSample) -> dict[str, float]:
    """The model's class probabilities for one preprocessed sample, by class name."""
    specs = params.array_specs()
    batch = {}
    for name, channels in model.inputs.items():
        array = np.asarray(sample.arrays[name], dtype=np.float32)
        if channels is not None:
            array = array[flow_channel_index(Path(checkpoint), specs[name].attrs, channels)]
        batch[name] = torch.from_numpy(array[None])
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(batch)["logits"], dim=1)[0].tolist()
    # the checkpoint names its classes; one written before it did predicts the composite's
    classes = [str(c) for c in info.get("classes", CLASSES)]
    if len(classes) != len(probabilities):
        raise PredictionError(f"{checkpoint}: names {len(classes)} classes for a model of {len(probabilities)} "
                              "outputs; save it again with `fr-mer train`")
    return dict(zip(classes, probabilities))


def predict_pair(checkpoint: str | Path, onset: str | Path, apex: str | Path) -> Prediction:
    """Class probabilities for the motion from ``onset`` to ``apex`` (two image files).

    The pair is preprocessed with the parameters recorded in the checkpoint (those
    of the cache it was trained on), so the input matches what the model saw.
    A checkpoint trained on imported STSTNet inputs has no such record: then the
    default preprocessing is used with the recorded flow normalisation (minmax255),
    and the note says so. A cache record without a normalisation is minmax255 (made
    before the choice existed). The model applies its own recorded input
    normalisation (on raw flow, the scale fitted at training, stored in the checkpoint).
    """
    model, info, params, note = _checkpoint(checkpoint)
    onset_frame, apex_frame = read_gray(onset), read_gray(apex)
    # The pair is the whole clip a user has: the clip inputs, when the parameters
    # ask for them, are made from onset -> apex alone.
    try:
        sample = process_pair(onset_frame, apex_frame, params, clip_frames=(onset_frame, apex_frame),
                              pre_cropped=is_pre_cropped_path(onset))
    except SampleError as error:
        raise SampleError(f"{onset} -> {apex}: {error}") from None
    by_class = _classify(checkpoint, model, info, params, sample)
    # read turned upright, as preprocessing reads every frame; said, as in the cache's flags
    rotated = ["exif_rotated"] if any(exif_orientation(Path(p)) != 1 for p in (onset, apex)) else []
    return Prediction(by_class, max(by_class, key=by_class.get), sorted(set(sample.flags) | set(rotated)), note)


def predict_clip(checkpoint: str | Path, clip_path: str | Path, *, onset: int | None = None,
                 apex: int | None = None) -> ClipPrediction:
    """Class probabilities for a user's own clip (a folder of frames or a video,
    :func:`fr_mer.pipeline.user_clip.read_user_clip`), preprocessed as ``fr-mer preprocess`` makes
    a sample, with the checkpoint's parameters (:func:`predict_pair`).

    ``onset``: index of the onset frame in the clip (default 0, the first); the clip's last frame
    is its offset. ``apex``: index of the apex frame; None spots it between onset and offset as
    preprocessing does for a clip without one (:func:`fr_mer.pipeline.preprocess.spot_pair`).
    The clip models' inputs are made from the frames onset..offset.
    """
    model, info, params, note = _checkpoint(checkpoint)
    clip = read_user_clip(clip_path)
    last = len(clip.frames) - 1
    onset = 0 if onset is None else int(onset)
    if not 0 <= onset < last:
        raise PredictionError(f"{clip_path}: onset {onset} must be a frame index from 0 to {last - 1} (the clip "
                              f"has {last + 1} frames, indices 0-{last}; the apex comes after the onset)")
    if apex is not None and not onset < apex <= last:
        raise PredictionError(f"{clip_path}: apex {apex} must come after the onset {onset} (onset < apex) and be "
                              f"at most {last}, the last frame's index")
    aligned, spotted = None, apex is None
    if spotted:
        try:
            found = spot_pair(clip.frames, onset, last, params, pre_cropped=clip.pre_cropped)
        except SampleError as error:
            raise SampleError(f"{clip_path}: {error}") from None
        apex, aligned = found.index, found.aligned
        if apex == onset:  # no motion after the onset beats the onset itself: the next frame
            apex, aligned = onset + 1, None
    try:
        sample = process_pair(clip.frames[onset], clip.frames[apex], params, clip_frames=clip.frames[onset:],
                              pre_cropped=clip.pre_cropped, aligned=aligned)
    except SampleError as error:
        raise SampleError(f"{clip_path}: {error}") from None
    by_class = _classify(checkpoint, model, info, params, sample)
    return ClipPrediction(by_class, max(by_class, key=by_class.get), sorted(set(sample.flags)), note,
                          onset=onset, apex=apex, offset=last, apex_spotted=spotted,
                          frame_names=(clip.names[onset], clip.names[apex], clip.names[last]))
