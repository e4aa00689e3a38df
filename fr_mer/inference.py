"""Predict one onset/apex pair with a trained checkpoint, through the same preprocessing."""
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
from fr_mer.pipeline.preprocess import PreprocessParams, SampleError, is_pre_cropped_path, process_pair, read_gray


class PredictionError(FrMerError, ValueError):
    """A checkpoint that cannot classify a single onset/apex pair."""


@dataclasses.dataclass
class Prediction:
    probabilities: dict[str, float]
    predicted: str
    flags: list[str]
    params_note: str


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
    onset_frame, apex_frame = read_gray(onset), read_gray(apex)
    # The pair is the whole clip a user has: the clip inputs, when the parameters
    # ask for them, are made from onset -> apex alone.
    try:
        sample = process_pair(onset_frame, apex_frame, params, clip_frames=(onset_frame, apex_frame),
                              pre_cropped=is_pre_cropped_path(onset))
    except SampleError as error:
        raise SampleError(f"{onset} -> {apex}: {error}") from None
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
    by_class = dict(zip(classes, probabilities))
    # read turned upright, as preprocessing reads every frame; said, as in the cache's flags
    rotated = ["exif_rotated"] if any(exif_orientation(Path(p)) != 1 for p in (onset, apex)) else []
    return Prediction(by_class, max(by_class, key=by_class.get), sorted(set(sample.flags) | set(rotated)), note)
