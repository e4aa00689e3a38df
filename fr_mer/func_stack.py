"""Any registered model's folds trained as one stacked network (torch.func), each fold exactly as alone.

F folds of a small network are too little work each for a GPU; stacked, they
are one large step. :class:`FunctionalStack` holds every parameter and buffer
of the F networks as one tensor with a leading fold dimension
(``torch.func.stack_module_state``) and runs the model's own ``forward`` over
all folds at once with ``torch.func.vmap`` + ``functional_call``, so any model
stacks without a hand-written form. :func:`train_func_stack` then runs
:func:`fr_mer.training.train_model`'s algorithm for every fold side by side:

- the same random streams: fold f's batch order, class-balanced draws and
  augmentation come from a generator seeded with fold f's seed, its dropout
  from the derived :data:`~fr_mer.randomness.DROPOUT_STREAM`, drawn in the same
  order and shapes as alone, so a stacked fold is the fold trained alone, to
  float tolerance (tests/test_func_stack.py);
- per-fold optimiser state (:mod:`fr_mer.stacked_optim`) and step count; a
  fold with no batch (fewer than two samples) left in a step takes no step;
- batch norm per fold, on each fold's real samples only: folds of unequal size
  have shorter last batches, padded to the longest and masked out of every
  batch norm's statistics, of dropout and of the loss, so padding moves neither
  statistics nor gradients. A model whose batch norms see rows that are not
  sample-major copies of the batch (``MERModel.stack_masks_padding`` False:
  SMA-STN appends neutral images) instead runs the folds of each distinct
  batch size as their own stacked call, without padding.

Augmentation, where the recipe asks for it, is the model's own ``augment`` on
each fold's real batch (one call per fold and step, outside ``vmap``).
"""
from __future__ import annotations

import copy
import math
import time
import types
from typing import Sequence

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from fr_mer.data import DeviceDataset
from fr_mer.models.base import MERModel, Recipe
from fr_mer.ops import dropout_mask
from fr_mer.randomness import DROPOUT_STREAM, derive_seed, make_generator
from fr_mer.stacked_optim import make_stacked_optimizer
from fr_mer.training import TrainLog, _epoch_order, check_classes_present


class _Call:
    """What one stacked forward call needs beyond its tensors: the folds in it and their batch sizes."""

    def __init__(self, folds: list[int], counts: np.ndarray, rows: int, masked: bool,
                 generators: Sequence[torch.Generator]) -> None:
        self.folds, self.counts, self.rows, self.masked = folds, counts, rows, masked
        self.generators = generators
        self.position: torch.Tensor | None = None  # inside vmap: this fold's position in ``folds``
        self.mask: torch.Tensor | None = None  # inside vmap: (rows,) bool, False for padding


class FunctionalStack:
    """F networks of one class as stacked parameters and buffers, evaluated with ``vmap``.

    The networks are left as they are until :meth:`unstack` copies each fold's
    trained tensors back into it. ``template`` is a copy of the first network
    whose batch norms and dropout read the per-fold mask and generators of the
    call in progress.
    """

    def __init__(self, models: Sequence[MERModel]) -> None:
        self.models = list(models)
        self.n_folds = len(models)
        self.params, self.buffers = stack_module_state(self.models)
        self.template = copy.deepcopy(self.models[0])
        self.template.train()
        for module in self.template.modules():
            if hasattr(module, "memory_format"):  # vmap computes in the default layout only
                module.memory_format = torch.contiguous_format
            if hasattr(module, "vmap_safe"):  # and traces no hand-written autograd.Function
                module.vmap_safe = True
        # One slot, shared by the template and its batch norms, holds the call in progress.
        self.slot = types.SimpleNamespace(call=None)
        self.template.drop = types.MethodType(_stacked_drop, self.template)
        self.template.stack_slot = self.slot
        for module in self.template.modules():
            if isinstance(module, _BatchNorm):
                module.forward = types.MethodType(_masked_batch_norm, module)
                module.stack_slot = self.slot
        self.masks_padding = type(self.models[0]).stack_masks_padding

    def forward(self, call: _Call, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs (len(call.folds), call.rows, ...) of the folds in ``call`` on ``batch`` (same leading dims)."""
        every = call.folds == list(range(self.n_folds))
        index = None if every else torch.as_tensor(call.folds, device=next(iter(self.params.values())).device)
        params = self.params if every else {k: v.index_select(0, index) for k, v in self.params.items()}
        buffers = self.buffers if every else {k: v.index_select(0, index) for k, v in self.buffers.items()}
        n = len(call.folds)
        device = batch[next(iter(batch))].device
        positions = torch.arange(n, device=device)
        counts = torch.as_tensor(call.counts[call.folds], device=device)
        mask = torch.arange(call.rows, device=device).view(1, -1) < counts.view(-1, 1)

        def one_fold(p, b, inputs, position, fold_mask):
            call.position, call.mask = position, fold_mask
            return functional_call(self.template, (p, b), (inputs,))

        self.slot.call = call
        try:
            outputs = vmap(one_fold, randomness="same")(params, buffers, batch, positions, mask)
        finally:
            self.slot.call = None
            call.position = call.mask = None
        if not every:
            with torch.no_grad():
                for key, value in buffers.items():
                    self.buffers[key].index_copy_(0, index, value)
        return outputs

    @torch.no_grad()
    def unstack(self) -> list[MERModel]:
        """Copy each fold's parameters and buffers back into its own network; returns the networks."""
        for f, model in enumerate(self.models):
            for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
                source = self.params.get(name, self.buffers.get(name))
                tensor.copy_(source[f])
        return self.models


def _stacked_drop(self: MERModel, x: torch.Tensor, p: float) -> torch.Tensor:
    """MERModel.drop inside a stacked call: each fold's mask from its own dropout generator, as alone.

    Fold f alone draws one mask for its (count_f, ...) activation; the stack
    draws the same, places it in the fold's padded rows (0 on padding) and
    hands each fold its own through the vmapped position. Drawn as for
    activations in the default memory order (the generic stack's models drop
    on (B, D) features).
    """
    if not self.training or p == 0.0:
        return x
    call: _Call = self.stack_slot.call
    per_sample = x.shape[0] // call.rows
    rest = tuple(x.shape[1:])
    masks = torch.zeros((len(call.folds), x.shape[0]) + rest, device=x.device, dtype=x.dtype)
    for j, f in enumerate(call.folds):
        real = int(call.counts[f]) * per_sample
        if call.counts[f] >= 2:
            masks[j, :real] = dropout_mask((real * math.prod(rest),), p, device=x.device, dtype=x.dtype,
                                           generator=call.generators[f]).view(real, *rest)
    return x * masks.index_select(0, call.position.view(1)).squeeze(0)


def _masked_batch_norm(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """nn.BatchNorm*d's forward for one fold of a stacked call, over the fold's real rows only.

    Rows are sample-major (``x.shape[0]`` a multiple of the padded batch size);
    in evaluation mode, the running statistics, as torch does.
    """
    if not self.training and self.track_running_stats:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
    call: _Call = self.stack_slot.call
    dims = [0] + list(range(2, x.dim()))
    shape = (1, -1) + (1,) * (x.dim() - 2)
    values_per_row = math.prod(x.shape[2:])
    if call.masked:
        if x.shape[0] % call.rows:
            raise RuntimeError(f"a batch norm of {type(self).__name__} sees {x.shape[0]} rows in a batch of "
                               f"{call.rows}: set stack_masks_padding = False on the model")
        weight = call.mask.repeat_interleave(x.shape[0] // call.rows).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
        n = weight.sum() * values_per_row
        mean = (x * weight).sum(dims) / n.clamp(min=1.0)
        var = ((x - mean.view(shape)).square() * weight).sum(dims) / n.clamp(min=1.0)
    else:
        n = torch.tensor(float(x.shape[0] * values_per_row), device=x.device)
        var, mean = torch.var_mean(x, dim=dims, correction=0)
    if self.track_running_stats:
        with torch.no_grad():
            active = n > 0
            self.num_batches_tracked.add_(active.to(self.num_batches_tracked.dtype))
            momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
            unbiased = var * (n / (n - 1).clamp(min=1.0))
            self.running_mean.copy_(torch.where(active, self.running_mean * (1 - momentum) + mean * momentum,
                                                self.running_mean))
            self.running_var.copy_(torch.where(active, self.running_var * (1 - momentum) + unbiased * momentum,
                                               self.running_var))
    out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    return out


def train_func_stack(models: Sequence[MERModel], data: DeviceDataset, train_indices: Sequence[np.ndarray],
                     recipe: Recipe, *, fold_seeds: Sequence[int]) -> list[TrainLog]:
    """Train ``models[f]`` on rows ``train_indices[f]`` with seed ``fold_seeds[f]``, all folds at once.

    Each fold follows :func:`fr_mer.training.train_model` with ``seed=fold_seeds[f]``
    (the same batches, augmentation and dropout); the models are updated in
    place. Returns one :class:`TrainLog` per fold; its ``seconds`` is the
    fold's share of the stack's wall time.
    """
    device = data.device
    n_folds = len(models)
    if len(train_indices) != n_folds or len(fold_seeds) != n_folds:
        raise ValueError("one training index and one seed per model are needed")
    indices = [torch.as_tensor(np.asarray(rows), device=device) for rows in train_indices]
    for f, rows in enumerate(indices):
        check_classes_present(data.labels, rows, models[0].n_classes, f"the training set of stacked fold {f}")
    for model, rows in zip(models, indices):
        model.to(device).train()
        model.fit_inputs(data, rows)  # each fold on its own training rows, as alone, before its buffers are stacked
    stack = FunctionalStack(models)
    optimizer = make_stacked_optimizer(list(stack.params.values()), n_folds, recipe)
    order_generators = [make_generator(seed, device) for seed in fold_seeds]
    dropout_generators = [make_generator(derive_seed(seed, DROPOUT_STREAM), device) for seed in fold_seeds]
    lengths = np.asarray([rows.numel() for rows in indices])
    steps = np.zeros(n_folds, dtype=np.int64)
    seen = np.zeros(n_folds, dtype=np.int64)
    batch_size = recipe.batch_size
    last_loss = torch.full((n_folds,), math.nan, device=device)
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        if recipe.lr_step_epochs > 0:
            optimizer.lr = recipe.lr * recipe.lr_gamma ** (epoch // recipe.lr_step_epochs)
        orders = [_epoch_order(rows, data.labels, recipe.class_balanced, g)
                  for rows, g in zip(indices, order_generators)]
        epoch_loss = torch.zeros(n_folds, device=device)
        epoch_batches = np.zeros(n_folds, dtype=np.int64)
        for begin in range(0, int(lengths.max()), batch_size):
            counts = np.clip(lengths - begin, 0, batch_size)
            counts[counts < 2] = 0  # a one-sample batch is skipped, as alone
            if not counts.any():
                continue
            losses = _stacked_step(stack, optimizer, data, recipe, orders, begin, counts, order_generators,
                                   dropout_generators)
            epoch_loss += losses
            epoch_batches += counts > 0
            seen += counts
        steps += epoch_batches
        if epoch == recipe.epochs - 1:
            last_loss = epoch_loss / torch.as_tensor(np.maximum(epoch_batches, 1), device=device)
    seconds = time.perf_counter() - start
    stack.unstack()
    losses = last_loss.cpu().tolist()
    return [TrainLog(recipe.epochs, int(steps[f]), seconds / n_folds, float(losses[f]), int(seen[f]))
            for f in range(n_folds)]


def _calls(stack: FunctionalStack, counts: np.ndarray, generators) -> list[_Call]:
    """The stacked calls of one step: all folds padded to the longest batch, or one call per batch size."""
    active = [f for f in range(stack.n_folds) if counts[f] > 0]
    rows = int(counts.max())
    if len(active) == stack.n_folds and (counts == rows).all():
        return [_Call(active, counts, rows, False, generators)]
    if stack.masks_padding:
        return [_Call(list(range(stack.n_folds)), counts, rows, True, generators)]
    sizes = sorted({int(counts[f]) for f in active}, reverse=True)
    return [_Call([f for f in active if counts[f] == size], counts, size, False, generators) for size in sizes]


def _call_batch(stack: FunctionalStack, data: DeviceDataset, recipe: Recipe, orders, begin: int, call: _Call,
                order_generators) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs (n, rows, ...) and targets (n, rows) of the folds in ``call``; padding repeats a real row."""
    device = data.device
    table = []
    for f in call.folds:
        count = int(call.counts[f])
        rows = orders[f][begin:begin + count] if count else orders[f][:1]
        table.append(torch.cat([rows, rows[:1].expand(call.rows - rows.numel())]))
    table = torch.stack(table)  # (n, rows)
    n = len(call.folds)
    if not recipe.augment:
        flat = data.batch(table.reshape(-1))
        batch = {k: v.view(n, call.rows, *v.shape[1:]) for k, v in flat.items()}
    else:  # the model's own augmentation of each fold's real rows, from the fold's generator, as alone
        parts = []
        for j, f in enumerate(call.folds):
            count = int(call.counts[f])
            real = stack.models[f].augment(data.batch(table[j, :count]), order_generators[f]) if count else None
            padded = data.batch(table[j])
            if real is not None:
                padded = {k: torch.cat([real[k], v[count:]]) for k, v in padded.items()}
            parts.append(padded)
        batch = {k: torch.stack([p[k] for p in parts]) for k in parts[0]}
    return batch, data.labels.index_select(0, table.reshape(-1)).view(n, call.rows).to(device)


def _stacked_step(stack: FunctionalStack, optimizer, data: DeviceDataset, recipe: Recipe, orders, begin: int,
                  counts: np.ndarray, order_generators, dropout_generators) -> torch.Tensor:
    """One training step of every fold with a batch at ``begin``; returns each fold's loss (0 if none)."""
    device = data.device
    losses = torch.zeros(stack.n_folds, device=device)
    total = torch.zeros((), device=device)
    for call in _calls(stack, counts, dropout_generators):
        batch, target = _call_batch(stack, data, recipe, orders, begin, call, order_generators)
        outputs = stack.forward(call, batch)
        # The model's loss on each fold's real rows: one vmapped loss per batch size in the call.
        for size in sorted({int(counts[f]) for f in call.folds if counts[f] > 0}):
            members = [j for j, f in enumerate(call.folds) if counts[f] == size]
            pick = torch.as_tensor(members, device=device)
            part = {k: v.index_select(0, pick)[:, :size] for k, v in outputs.items()}
            fold_loss = vmap(stack.template.loss)(part, target.index_select(0, pick)[:, :size])
            total = total + fold_loss.sum()
            losses = losses.index_copy(0, torch.as_tensor([call.folds[j] for j in members], device=device),
                                       fold_loss.detach())
    optimizer.zero_grad()
    total.backward()
    optimizer.step(torch.as_tensor(counts > 0, device=device))
    return losses
