"""Checkpoints: a model's weights with what is needed to rebuild and trust it.

Saved as a plain dict of tensors, strings and numbers, so that loading uses
``torch.load(..., weights_only=True)`` (no code runs from a checkpoint file).
The model's options (input sizes included) are recorded as built, and
validated against the model's constructor when the checkpoint is loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import torch

from fr_mer.atomic import atomic_path
from fr_mer.config import to_record
from fr_mer.errors import FrMerError
from fr_mer.models import MERModel, Recipe, create_model, list_models, model_class
from fr_mer.pipeline.cache import SCHEMA_VERSION
from fr_mer.pipeline.labels import CLASSES
from fr_mer.state_dicts import CheckpointError, load_into, load_tensors

FORMAT = "fr-mer-checkpoint"
FORMAT_VERSION = 1
#: Entries every checkpoint of this format holds (JSON text for the structured ones).
_REQUIRED = ("model", "options", "state_dict", "recipe")

__all__ = ["CheckpointError", "FORMAT", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, model: MERModel, *, fold: str | None, seed: int | None,
                    recipe: Recipe, preprocess_params: Mapping[str, object] | None = None,
                    classes: Sequence[str] = CLASSES) -> Path:
    """Write ``model`` with its options, recipe and ``classes`` (the names of its outputs, in order)."""
    if len(classes) != model.n_classes:
        raise CheckpointError(f"{path}: the model predicts {model.n_classes} classes, "
                              f"{len(classes)} class names were given")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.model_name,
        "options": json.dumps(model.options(), sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "fold": fold or "",
        "seed": -1 if seed is None else int(seed),
        "recipe": json.dumps(to_record(recipe), sort_keys=True),
        "classes": list(classes),
        "cache_schema_version": SCHEMA_VERSION,
        "preprocess_params": json.dumps(dict(preprocess_params or {}), sort_keys=True, default=str),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def check_replaceable(path: str | Path, overwrite: bool) -> None:
    """Refuse to replace an existing ``path``: always without ``overwrite``, and with it unless the file is
    an fr-mer checkpoint (never a user's other file)."""
    path = Path(path)
    if not path.exists():
        return
    if not overwrite:
        raise CheckpointError(f"--out {path}: exists; choose another --out, or --overwrite to replace the "
                              "checkpoint")
    try:
        payload = load_tensors(path, "cpu")
    except CheckpointError:
        payload = None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"--out {path}: not an fr-mer checkpoint, so --overwrite leaves it alone; "
                              "choose another --out")


def load_checkpoint(path: str | Path, *, expected_model: str | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[MERModel, dict]:
    """Rebuild the model of a checkpoint; refuses other files and other models."""
    path = Path(path)
    payload = load_tensors(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an fr-mer checkpoint (a bare state dict? use `fr-mer evaluate --weights DIR` "
            "for per-fold state dicts)"
        )
    version = payload.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {version!r}; this fr-mer reads versions 1 to "
                              f"{FORMAT_VERSION}: use the fr-mer that wrote it, or train it again")
    absent = [key for key in _REQUIRED if key not in payload]
    if absent:
        raise CheckpointError(f"{path}: a damaged fr-mer checkpoint (no {', '.join(absent)}); "
                              "save it again with `fr-mer train`")
    name = payload["model"]
    if expected_model is not None and name != expected_model:
        raise CheckpointError(f"{path}: holds a {name!r} model, not {expected_model!r}")
    if name not in list_models():
        raise CheckpointError(f"{path}: model {name!r} is not known to this fr-mer")
    try:
        options = _json_entry(path, payload, "options")
        # A checkpoint written before an option existed rebuilds the model it was trained as.
        options = {**model_class(name).options_before_added, **options}
        model = create_model(name, **options)
    except FrMerError as error:
        raise CheckpointError(f"{path}: its recorded options do not build a {name!r} model ({error})") from None
    if not isinstance(payload["state_dict"], Mapping):
        raise CheckpointError(f"{path}: its state_dict entry is not a mapping of names to tensors")
    load_into(model, path, payload["state_dict"])
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    info["preprocess_params"] = _json_entry(path, payload, "preprocess_params", "{}")
    info["recipe"] = _json_entry(path, payload, "recipe")
    info["options"] = options
    return model.eval(), info


def _json_entry(path: Path, payload: Mapping, key: str, default: str | None = None) -> dict:
    try:
        value = json.loads(payload.get(key, default))
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: its {key} entry is damaged (not a JSON mapping); "
                              "save the checkpoint again with `fr-mer train`")
    return value
