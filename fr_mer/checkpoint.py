"""Checkpoints: a model's weights with what is needed to rebuild and trust it.

Saved as a plain dict of tensors, strings and numbers, so that loading uses
``torch.load(..., weights_only=True)`` (no code runs from a checkpoint file).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

import torch

from fr_mer.errors import FrMerError
from fr_mer.models import MERModel, create_model, list_models
from fr_mer.pipeline.cache import SCHEMA_VERSION
from fr_mer.pipeline.labels import CLASSES

FORMAT = "fr-mer-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(FrMerError, ValueError):
    pass


def save_checkpoint(path: str | Path, model: MERModel, *, fold: str | None, seed: int | None,
                    recipe, preprocess_params: Mapping[str, object] | None = None) -> Path:
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
        "recipe": json.dumps(dataclasses.asdict(recipe), sort_keys=True),
        "classes": list(CLASSES),
        "cache_schema_version": SCHEMA_VERSION,
        "preprocess_params": json.dumps(dict(preprocess_params or {}), sort_keys=True, default=str),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, *, expected_model: str | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[MERModel, dict]:
    """Rebuild the model of a checkpoint; refuses other files and other models."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an fr-mer checkpoint (a bare state dict? use `fr-mer evaluate --weights DIR` "
            "for per-fold state dicts)"
        )
    name = payload["model"]
    if expected_model is not None and name != expected_model:
        raise CheckpointError(f"{path}: holds a {name!r} model, not {expected_model!r}")
    if name not in list_models():
        raise CheckpointError(f"{path}: model {name!r} is not known to this fr-mer")
    model = create_model(name, **json.loads(payload["options"]))
    model.load_state_dict(payload["state_dict"])
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    info["preprocess_params"] = json.loads(payload.get("preprocess_params", "{}"))
    info["recipe"] = json.loads(payload["recipe"])
    info["options"] = json.loads(payload["options"])
    return model.eval(), info


def load_state_dict_file(path: str | Path, model: MERModel, map_location="cpu") -> None:
    """Load a bare per-fold state dict (STSTNet's released ``sub01.pth`` files) into ``model``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a state dict ({exc})") from exc
    if isinstance(state, dict) and state.get("format") == FORMAT:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: does not fit model {model.model_name!r} ({str(exc).splitlines()[0]}); "
            "check --model"
        ) from exc
