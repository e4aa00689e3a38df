"""Reading tensors from files: state dicts and checkpoints, never unpickling code.

Every file is opened with ``torch.load(..., weights_only=True)``. This module
knows files, not models, so the models (Micro-attention's backbone checkpoint)
and :mod:`fr_mer.checkpoint` both use it without an import cycle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from fr_mer.errors import FrMerError

#: Keys under which training scripts (fr-mer's own checkpoints included) nest a state dict.
NESTING_KEYS = ("state_dict", "model_state", "model")


class CheckpointError(FrMerError, ValueError):
    """A checkpoint or state-dict file that cannot be read, or does not fit its model."""


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The object saved in ``path``, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass the path of a state dict saved with torch.save")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign, truncated or unsafe files
        raise CheckpointError(
            f"{path}: cannot be read with weights_only=True ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from None


def read_state_dict(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state dict from a file, bare or nested under ``state_dict``/``model_state``/``model``.

    Strips the ``module.`` prefixes ``DataParallel`` leaves.
    """
    state = load_tensors(path, map_location)
    for key in NESTING_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_into(model: torch.nn.Module, path: str | Path, state: Mapping[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state)`` (strict), a mismatch reported as the file not fitting the model."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(
            f"{path}: does not fit model {name!r} ({str(exc).splitlines()[0]}); "
            "check --model and the options it was trained with"
        ) from None
