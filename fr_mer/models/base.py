"""What every fr-mer model is: an ``nn.Module`` that names its cache inputs and its recipe.

A model declares

- ``inputs``: cache array columns it reads, and for the ``flow`` column the
  channel order it wants (the data layer builds the tensors, so a model never
  touches HDF5);
- ``recipe``: its paper's training recipe (:class:`Recipe`), which the CLI may
  override option by option;
- ``forward(batch) -> dict`` with at least ``"logits"`` (B, n_classes);
- ``loss(outputs, target) -> Tensor``: cross-entropy unless the method has its
  own terms (FR's proposal loss, SMA-STN's deviation enhancement loss).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.config import settings
from fr_mer.errors import ParameterError
from fr_mer.ops import dropout as _dropout

OPTIMIZERS = ("adam", "adamw", "sgd")


@settings
class Recipe:
    """A training recipe; defaults per model come from its paper or public code."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-4
    optimizer: str = "adam"  # "adam" | "adamw" | "sgd"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    lr_step_epochs: int = 0  # multiply lr by lr_gamma every this many epochs (0: constant)
    lr_gamma: float = 0.1
    class_balanced: bool = False  # sample training batches with equal class frequency
    augment: bool = False  # model-defined augmentation, training only

    def __post_init__(self) -> None:
        # A batch of one sample is skipped (batch norm needs two), so batch_size 1 would train nothing.
        for name, least in (("epochs", 1), ("batch_size", 2), ("lr_step_epochs", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ParameterError(f"recipe {name} (--{name.replace('_', '-')}) must be an integer "
                                     f"of at least {least}, got {value!r}")
        for name, option in (("lr", " (--lr)"), ("lr_gamma", "")):
            if not getattr(self, name) > 0:
                raise ParameterError(f"recipe {name}{option} must be positive, got {getattr(self, name)!r}")
        if not (self.weight_decay >= 0 and self.momentum >= 0):
            raise ParameterError(f"recipe weight_decay and momentum must be >= 0, got "
                                 f"{self.weight_decay!r} and {self.momentum!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(f"recipe optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")

    def replace(self, **changes: object) -> "Recipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class MERModel(nn.Module):
    """Base class: subclasses set ``inputs`` and ``recipe`` and implement ``forward``."""

    #: cache column -> flow channel order (tuple of names) or None for other arrays.
    inputs: ClassVar[Mapping[str, tuple[str, ...] | None]] = {}
    recipe: ClassVar[Recipe] = Recipe()
    #: A module class computing many independent copies of this model as one
    #: network (built from a list of instances), for training several LOSO
    #: folds at once (:mod:`fr_mer.fold_stack`); None where there is none.
    stacked: ClassVar[type | None] = None
    #: Whether every batch norm and dropout of ``forward`` sees rows that are the
    #: batch's samples, sample-major (row r of a batch of B from sample r // (N / B)):
    #: then a stack of folds (:mod:`fr_mer.func_stack`) pads shorter batches and
    #: masks the padding out; False runs each batch size as its own stacked call.
    stack_masks_padding: ClassVar[bool] = True
    n_classes: int
    #: The generator that forward-time randomness (dropout) draws from while
    #: fr-mer trains the model (:func:`fr_mer.training.train_model` sets it to a
    #: stream derived from the run seed and fold); None: torch's global generator.
    generator: torch.Generator | None = None
    #: Constructor arguments recorded in checkpoints even when left at their
    #: defaults (sizes a checkpoint must rebuild at, whatever a later default).
    recorded_options: ClassVar[tuple[str, ...]] = ()

    def drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Inverted dropout in training mode, drawn from :attr:`generator`; identity in evaluation."""
        if not self.training or p == 0.0:
            return x
        return _dropout(x, p, generator=self.generator)

    def loss(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs["logits"], target)

    def augment(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Training-time augmentation on device tensors; identity unless overridden."""
        return batch

    def options(self) -> dict[str, object]:
        """Constructor arguments, recorded in checkpoints to rebuild the model."""
        options = dict(getattr(self, "_options", {}))
        for name in self.recorded_options:
            options.setdefault(name, getattr(self, name))
        return options


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
