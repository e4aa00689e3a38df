"""Predict one onset/apex pair with a trained checkpoint, through the same preprocessing."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from fr_mer.checkpoint import load_checkpoint
from fr_mer.data import flow_channel_index
from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.labels import CLASSES
from fr_mer.pipeline.preprocess import PreprocessParams, process_clip


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
    default preprocessing is used, and the note says so.
    """
    model, info = load_checkpoint(checkpoint)
    recorded = info.get("preprocess_params") or {}
    if "flow_size" in recorded:
        params = PreprocessParams.from_dict(recorded)
        note = "preprocessed with the checkpoint's recorded parameters"
    else:
        params = PreprocessParams()
        note = ("the checkpoint records no fr-mer preprocessing (e.g. trained on imported STSTNet "
                "inputs): default preprocessing used")
    for name in model.inputs:
        if name not in params.array_specs():
            raise ValueError(f"model {info['model']!r} needs the {name!r} input, which a single "
                             "onset/apex pair cannot provide")
    clip = Clip(dataset="casme2", subject="predict", clip=Path(apex).stem, emotion="", label=None,
                onset_frame=0, apex_frame=1, offset_frame=1, frames={0: Path(onset), 1: Path(apex)},
                apex_rule="given")
    sample = process_clip(clip, params)
    batch = {}
    specs = params.array_specs()
    for name, channels in model.inputs.items():
        array = np.asarray(sample.arrays[name], dtype=np.float32)
        if channels is not None:
            array = array[flow_channel_index(Path(checkpoint), specs[name].attrs, channels)]
        batch[name] = torch.from_numpy(array[None])
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(batch)["logits"], dim=1)[0].tolist()
    by_class = dict(zip(CLASSES, probabilities))
    return Prediction(by_class, max(by_class, key=by_class.get), list(sample.meta.get("flags", [])), note)
