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
import math
from typing import ClassVar, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.config import settings
from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_BATCH_SIZE, MAX_EPOCHS, check_number
from fr_mer.ops import dropout as _dropout

OPTIMIZERS = ("adam", "adamw", "sgd")

#: Training samples of a composite-protocol fold (442 samples less one subject's, about 6):
#: the size the recipes were tuned at, and the reference of :attr:`Recipe.min_steps`.
COMPOSITE_FOLD_TRAIN_SAMPLES = 436


def batches_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimisation steps of one epoch over ``n_train`` samples: a last batch of one sample is skipped."""
    full, rest = divmod(n_train, batch_size)
    return full + (1 if rest >= 2 else 0)


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
    #: The fewest optimisation steps a fold trains for (the rule of :meth:`for_training_size`).
    #: None: the steps the recipe takes on a composite fold, so the composite is unchanged;
    #: 0: off (the epochs are taken as given).
    min_steps: int | None = None

    def __post_init__(self) -> None:
        # A batch of one sample is skipped (batch norm needs two), so batch_size 1 would train nothing.
        for name, least, most in (("epochs", 1, MAX_EPOCHS), ("batch_size", 2, MAX_BATCH_SIZE),
                                  ("lr_step_epochs", 0, MAX_EPOCHS)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
                raise ParameterError(f"recipe {name} (--{name.replace('_', '-')}) must be an integer "
                                     f"of at least {least} and at most {most}, got {value!r}")
        for name, option in (("lr", " (--lr)"), ("lr_gamma", "")):
            check_number(f"recipe {name}{option}", getattr(self, name), low=0, low_open=True)
        for name in ("weight_decay", "momentum"):
            check_number(f"recipe {name}", getattr(self, name), low=0)
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(f"recipe optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.min_steps is None:
            # Resolved once, from the recipe as written, so that a later batch-size or lr
            # change keeps the step count the recipe was tuned with.
            object.__setattr__(self, "min_steps", self.epochs * batches_per_epoch(
                COMPOSITE_FOLD_TRAIN_SAMPLES, self.batch_size))
        elif isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ParameterError(f"recipe min_steps must be an integer >= 0, got {self.min_steps!r}")

    def replace(self, **changes: object) -> "Recipe":
        """A copy with the changes that are not None. An explicit ``epochs`` turns the
        :attr:`min_steps` rule off unless ``min_steps`` is given too: that many epochs are run."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "epochs" in changes:
            changes.setdefault("min_steps", 0)
        return dataclasses.replace(self, **changes)

    def for_training_size(self, n_train: int) -> "Recipe":
        """The recipe a fold of ``n_train`` training samples runs: the rule that trains at any size.

        When ``epochs`` x (batches per epoch) falls short of :attr:`min_steps`, the epochs, and
        the learning-rate schedule's ``lr_step_epochs`` with them, are multiplied by the smallest
        integer that reaches it. FR's recipe (20 epochs of batch 128, 80 steps on a composite fold
        of 436 samples) runs 80 epochs of one batch on a fold of 110. Unchanged otherwise.
        """
        steps = self.epochs * batches_per_epoch(n_train, self.batch_size)
        if steps == 0 or steps >= self.min_steps:
            return self
        factor = math.ceil(self.min_steps / steps)
        return dataclasses.replace(self, epochs=self.epochs * factor,
                                   lr_step_epochs=self.lr_step_epochs * factor)


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
    #: Options added to the model after checkpoints were written without them, with the value those
    #: older checkpoints were built with (their behaviour then), when it is not the new default. A
    #: recorded option (:attr:`recorded_options`) absent from a checkpoint means the checkpoint predates it.
    options_before_added: ClassVar[dict[str, object]] = {}

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

    def fit_inputs(self, data, train_index: torch.Tensor) -> None:
        """Fit what the model's input normalisation learns from the data, on rows ``train_index`` only.

        Called by the training functions (:func:`fr_mer.training.train_model`,
        :func:`fr_mer.fold_stack.train_stacked`) with the training rows, before the
        first step; never with a held-out row. ``data`` is the
        :class:`~fr_mer.data.DeviceDataset`. None here; the flow models fit a
        per-channel scale on raw caches (:mod:`fr_mer.models.flow_input`).
        """

    @classmethod
    def check_options(cls, options: Mapping[str, object], flow_normalisation: str, source: str) -> None:
        """Raise :class:`~fr_mer.errors.ParameterError` (naming ``source``) if constructor ``options``
        do not fit a cache whose flow is stored as ``flow_normalisation``, without building the
        model; nothing to check here."""

    def check_inputs(self, flow_normalisation: str, source: str) -> None:
        """:meth:`check_options` for this model's own options."""
        self.check_options(self.options(), flow_normalisation, source)

    def input_record(self) -> dict[str, object]:
        """What the model's input normalisation resolved to (recorded with each fold's results); {} here."""
        return {}

    def options(self) -> dict[str, object]:
        """Constructor arguments, recorded in checkpoints to rebuild the model."""
        options = dict(getattr(self, "_options", {}))
        for name in self.recorded_options:
            options.setdefault(name, getattr(self, name))
        return options


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
