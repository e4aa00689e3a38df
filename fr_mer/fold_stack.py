"""Many LOSO folds trained together as one stacked model: the entry point, and STSTNet's hand-written stack.

:func:`train_stacked` trains any registered model's folds stacked: a model
with a hand-written stacked form (``MERModel.stacked``; STSTNet's, below)
trains with it, every other model through :mod:`fr_mer.func_stack` (torch.func,
each fold exactly as trained alone). The rest of this docstring is about the
hand-written form, kept because its fused pass is faster than the generic
stack could run STSTNet (whose fused autograd functions torch.func cannot trace).

One fold of a small network (STSTNet: 1,683 parameters, batches of 256
samples of 3 x 28 x 28) is far too little work for a GPU: fold-by-fold
training there is bound by kernel launches and Python, not by arithmetic.
Stacking the folds' networks (a model's ``stacked`` form: one group of a
grouped convolution per fold, batch norm per fold, a batched linear layer)
turns F small steps into one large step.

Each fold keeps its own parameters, training subjects, batch order and Adam
state; fold f's parameters receive exactly the gradient of fold f's loss on
fold f's batch, so this is the fold-by-fold algorithm run side by side, not a
new one. Initialisation is identical too: each fold's network is built from
its own seed, then stacked. What differs is the random streams behind batch
order and dropout (one pair of generators for the stack), so results agree with
fold-by-fold training in distribution, not bit for bit.

Folds of different sizes have batches of different sizes: the shorter ones
are padded, and the padding is masked out of the batch statistics and the
loss. A fold with no batch left in an epoch's step (fewer than two samples,
as :func:`fr_mer.training.train_model` skips) is not moved by the optimiser.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.data import DeviceDataset
from fr_mer.errors import ParameterError
from fr_mer.models.base import MERModel, Recipe
from fr_mer.randomness import DROPOUT_STREAM, derive_seed, make_generator
from fr_mer.stacked_optim import StackedAdam
from fr_mer.training import TrainLog, check_classes_present

__all__ = ["StackedAdam", "check_stackable", "stacked_step", "train_stacked"]


def check_stackable(model_class: type[MERModel], recipe: Recipe) -> None:
    """Raise ParameterError, saying what to do, unless ``model_class`` can train stacked with ``recipe``.

    A model with a hand-written stacked form (``MERModel.stacked``: STSTNet's
    fused pass, which torch.func cannot trace) trains with it, which takes Adam
    or AdamW without class-balanced sampling or augmentation; every other
    model stacks through :mod:`fr_mer.func_stack`, with any recipe.
    """
    if model_class.stacked is None:
        return
    if recipe.optimizer not in ("adam", "adamw"):
        raise ParameterError(f"stacked {model_class.model_name} folds train with Adam or AdamW, not "
                             f"{recipe.optimizer!r}; use --fold-batch 1")
    if recipe.class_balanced or recipe.augment:
        raise ParameterError(f"stacked {model_class.model_name} folds support neither class-balanced sampling "
                             "nor augmentation; use --fold-batch 1")


def stacked_step(stacked: nn.Module, optimizer: StackedAdam, data: DeviceDataset, index: torch.Tensor,
                 counts: torch.Tensor) -> torch.Tensor:
    """One training step of every fold; returns each fold's mean loss (F,), 0 for folds not stepped.

    ``index`` (F, b): dataset rows of each fold's batch, the first
    ``counts[f]`` of row f real and the rest padding (any valid row);
    ``counts`` (F,) int64 on the same device (so the step needs nothing from
    the host). A fold with fewer than two real samples takes no step, as
    fold-by-fold training skips a one-sample batch (batch norm needs two).
    """
    n_folds, b = index.shape
    device = index.device
    active = counts >= 2
    positions = torch.arange(b, device=device)
    mask = (positions.view(1, -1) < counts.view(-1, 1)) & active.view(-1, 1)  # (F, b)
    rows = index.t().reshape(-1)  # sample-major: (b, F) rows
    batch = {name: t.view(b, n_folds, *t.shape[1:]) for name, t in data.batch(rows).items()}
    logits = stacked(batch, mask.t())  # (b, F, n)
    target = data.labels.index_select(0, rows).view(b, n_folds)
    per_sample = F.cross_entropy(logits.reshape(b * n_folds, -1), target.reshape(-1), reduction="none")
    weight = mask.t().to(per_sample.dtype)
    per_fold = (per_sample.view(b, n_folds) * weight).sum(0) / counts.clamp(min=1).to(per_sample.dtype)
    optimizer.zero_grad()
    per_fold.sum().backward()
    optimizer.step(active)
    return per_fold.detach()


def _row_table(train_indices: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(folds, longest) training rows of every fold, padded with its first row, and the padding's mask."""
    lengths = [len(t) for t in train_indices]
    table = torch.zeros(len(train_indices), max(lengths), dtype=torch.int64)
    for f, rows in enumerate(train_indices):
        table[f, :lengths[f]] = torch.as_tensor(rows)
        table[f, lengths[f]:] = int(rows[0])  # padding, masked out
    table = table.to(device)
    padding = (torch.arange(max(lengths), device=device).view(1, -1)
               >= torch.as_tensor(lengths, device=device).view(-1, 1))
    return table, padding


def _batch_plan(lengths: Sequence[int], batch_size: int,
                device: torch.device) -> list[tuple[int, np.ndarray, torch.Tensor]]:
    """(first position, real samples per fold, the same on the device) of every batch of an epoch: the same
    each epoch; a batch in which no fold has two samples is skipped, as :func:`train_model` skips it."""
    plan = []
    for begin in range(0, max(lengths), batch_size):
        counts = np.clip(np.asarray(lengths) - begin, 0, batch_size)
        if counts.max() >= 2:
            plan.append((begin, counts, torch.as_tensor(counts, device=device)))
    return plan


def train_stacked(models: Sequence[MERModel], data: DeviceDataset, train_indices: Sequence[np.ndarray],
                  recipe: Recipe, *, seed: int, fold_seeds: Sequence[int] | None = None,
                  compile: bool = False) -> list[TrainLog]:
    """Train ``models[f]`` on rows ``train_indices[f]`` for every f at once; the models are updated in place.

    The one entry point for stacked folds. Each fold's input normalisation is fitted on
    its own training rows first (:meth:`~fr_mer.models.MERModel.fit_inputs`). A model without a hand-written
    stacked form goes through :func:`fr_mer.func_stack.train_func_stack`: fold f
    trains exactly as :func:`~fr_mer.training.train_model` with seed
    ``fold_seeds[f]`` (default: derived from ``seed`` and f) would train it alone.
    The rest of this docstring is the hand-written (STSTNet) stack's.

    ``seed`` fixes the stack's batch orders (one generator on the data's
    device) and, through a derived stream, its dropout. Each
    fold sees its own training rows in a fresh random order every epoch,
    in batches of ``recipe.batch_size``, exactly as :func:`train_model` does.
    Returns one :class:`TrainLog` per fold; its ``seconds`` is the fold's share
    of the stack's wall time (the total divided by the number of folds).
    ``compile``: run the stack's forward and backward passes and the optimiser
    step through ``torch.compile``, on the stack's plain autograd form, whose
    operations Inductor fuses itself (on an H100: 11.2 ms per 68-fold step
    against 15.1 ms for the hand-fused pass, after 20-36 s of compilation per
    process; docs/benchmarks.md).
    """
    if not models:
        return []
    check_stackable(type(models[0]), recipe)
    if type(models[0]).stacked is None:
        from fr_mer.func_stack import train_func_stack

        if compile:
            raise ParameterError(f"torch.compile of a stack is for the hand-written stacks only, "
                                 f"not {type(models[0]).model_name}")
        if fold_seeds is None:
            fold_seeds = [derive_seed(seed, f) for f in range(len(models))]
        return train_func_stack(models, data, train_indices, recipe, fold_seeds=fold_seeds)
    if len(models) != len(train_indices):
        raise ValueError("one training index per model is needed")
    device = data.device
    lengths = [len(t) for t in train_indices]
    for f, rows in enumerate(train_indices):
        check_classes_present(data.labels, torch.as_tensor(rows, device=device), models[0].n_classes,
                              f"the training set of stacked fold {f}")
    n_folds, n_max = len(models), max(lengths)
    # Each fold runs the epochs its own training size gives (Recipe.for_training_size), as fold
    # by fold; a fold whose epochs are done takes no step in the stack's remaining ones.
    fold_recipes = [recipe.for_training_size(n) for n in lengths]
    fold_epochs = np.asarray([r.epochs for r in fold_recipes])
    if recipe.lr_step_epochs > 0 and len({r.lr_step_epochs for r in fold_recipes}) > 1:
        raise ParameterError("the folds of this stack run different learning-rate schedules (their training "
                             "sets straddle the recipe's min_steps rule); use --fold-batch 1")
    recipe = fold_recipes[int(fold_epochs.argmax())]
    table, padding = _row_table(train_indices, device)

    for model, rows in zip(models, train_indices):  # each fold's input normalisation, on its training rows only
        model.to(device).fit_inputs(data, torch.as_tensor(rows, device=device))
    stacked = type(models[0]).stacked(list(models)).to(device).train()
    optimizer = StackedAdam(list(stacked.parameters()), n_folds, lr=recipe.lr, weight_decay=recipe.weight_decay,
                            decoupled=recipe.optimizer == "adamw")
    forward = stacked
    if compile:
        stacked.fused = False
        forward = torch.compile(stacked)
        optimizer.step = torch.compile(optimizer.step)
    generator = make_generator(seed, device)
    stacked.generator = make_generator(derive_seed(seed, DROPOUT_STREAM), device)
    batch_size = recipe.batch_size
    steps = np.zeros(n_folds, dtype=np.int64)
    seen = np.zeros(n_folds, dtype=np.int64)
    last_loss = torch.full((n_folds,), math.nan, device=device)
    plan = _batch_plan(lengths, batch_size, device)
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        if recipe.lr_step_epochs > 0:
            optimizer.lr = recipe.lr * recipe.lr_gamma ** (epoch // recipe.lr_step_epochs)
        # A random order of each fold's rows, padding sorted last: one kernel for all folds.
        keys = torch.rand(n_folds, n_max, generator=generator, device=device).masked_fill_(padding, 2.0)
        order = table.gather(1, keys.argsort(dim=1))
        epoch_loss = torch.zeros(n_folds, device=device)
        epoch_batches = np.zeros(n_folds, dtype=np.int64)
        running = epoch < fold_epochs
        for begin, counts, counts_on_device in plan:
            if not running.all():
                counts = np.where(running, counts, 0)
                counts_on_device = torch.as_tensor(counts, device=device)
            epoch_loss += stacked_step(forward, optimizer, data, order[:, begin:begin + batch_size],
                                       counts_on_device)
            stepped = counts >= 2
            epoch_batches += stepped
            seen += np.where(stepped, counts, 0)
        steps += epoch_batches
        finishing = epoch == fold_epochs - 1
        if finishing.any():  # a fold's last epoch (one host synchronisation when all end together)
            mean = epoch_loss / torch.as_tensor(np.maximum(epoch_batches, 1), device=device)
            last_loss = torch.where(torch.as_tensor(finishing, device=device), mean, last_loss)
    seconds = time.perf_counter() - start
    stacked.unstack()
    losses = last_loss.cpu().tolist()
    share = seconds / n_folds
    return [TrainLog(int(fold_epochs[f]), int(steps[f]), share, float(losses[f]), int(seen[f]))
            for f in range(n_folds)]
