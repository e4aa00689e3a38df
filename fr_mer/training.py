"""Training and prediction on device-resident tensors.

Every batch is an ``index_select`` into tensors that already live on the
device: no DataLoader, no worker processes, no per-step copies. There is no
test pass during training: the held-out subject is touched once, by
:func:`predict_proba`, after the last epoch.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch

from fr_mer.data import DeviceDataset
from fr_mer.models.base import MERModel, Recipe


@dataclasses.dataclass
class TrainLog:
    epochs: int
    steps: int
    seconds: float
    final_loss: float
    samples_seen: int

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.seconds if self.seconds > 0 else float("nan")


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose adam, adamw or sgd")


def _epoch_order(train_index: torch.Tensor, labels: torch.Tensor, balanced: bool,
                 generator: torch.Generator) -> torch.Tensor:
    n = train_index.numel()
    if not balanced:
        return train_index[torch.randperm(n, generator=generator, device=generator.device)]
    # Equal class frequency, computed from the training fold only.
    train_labels = labels[train_index]
    counts = torch.bincount(train_labels, minlength=int(train_labels.max()) + 1).clamp(min=1)
    weights = (1.0 / counts.to(torch.float32))[train_labels]
    draw = torch.multinomial(weights, n, replacement=True, generator=generator)
    return train_index[draw]


def check_classes_present(labels: torch.Tensor, train_index: torch.Tensor, n_classes: int,
                          what: str = "the training set") -> None:
    """Raise ValueError, naming the missing classes, unless ``labels[train_index]`` holds every class."""
    classes_present = torch.unique(labels[train_index])
    if classes_present.numel() < n_classes:
        absent = sorted(set(range(n_classes)) - set(classes_present.tolist()))
        raise ValueError(f"{what} has no sample of class(es) {absent}; "
                         "this fold cannot be trained (check the cache's labels)")


def train_model(model: MERModel, data: DeviceDataset, train_index: torch.Tensor, recipe: Recipe, *,
                seed: int, on_epoch: Callable[[int, float], None] | None = None) -> TrainLog:
    """Train ``model`` in place on ``data`` rows ``train_index`` with ``recipe``.

    ``seed`` fixes the batch order and augmentation (a generator on the data's
    device); dropout and initialisation use torch's global generator, seeded by
    the caller (:func:`seed_everything`) before the model is built.
    """
    device = data.device
    model.to(device).train()
    train_index = train_index.to(device)
    check_classes_present(data.labels, train_index, model.n_classes)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    optimizer = make_optimizer(model, recipe)
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step_epochs, recipe.lr_gamma)
                 if recipe.lr_step_epochs > 0 else None)
    start = time.perf_counter()
    steps = seen = 0
    loss_value = math.nan
    for epoch in range(recipe.epochs):
        order = _epoch_order(train_index, data.labels, recipe.class_balanced, generator)
        epoch_loss = torch.zeros((), device=device)
        n_batches = 0
        for begin in range(0, order.numel(), recipe.batch_size):
            index = order[begin:begin + recipe.batch_size]
            if index.numel() < 2:  # batch norm needs two samples; one leftover is skipped
                continue
            batch = data.batch(index)
            if recipe.augment:
                batch = model.augment(batch, generator)
            outputs = model(batch)
            loss = model.loss(outputs, data.labels.index_select(0, index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach()
            n_batches += 1
            steps += 1
            seen += index.numel()
        if scheduler is not None:
            scheduler.step()
        if on_epoch is not None or epoch == recipe.epochs - 1:
            loss_value = float(epoch_loss / max(n_batches, 1))  # one sync per epoch at most
            if on_epoch is not None:
                on_epoch(epoch, loss_value)
    seconds = time.perf_counter() - start
    return TrainLog(recipe.epochs, steps, seconds, loss_value, seen)


@torch.no_grad()
def predict_proba(model: MERModel, data: DeviceDataset, index: torch.Tensor,
                  batch_size: int = 512) -> torch.Tensor:
    """Class probabilities (len(index), n_classes) in evaluation mode."""
    model.eval()
    index = index.to(data.device)
    chunks = []
    for begin in range(0, index.numel(), batch_size):
        outputs = model(data.batch(index[begin:begin + batch_size]))
        chunks.append(torch.softmax(outputs["logits"].float(), dim=1))
    if not chunks:
        return torch.zeros((0, model.n_classes), device=data.device)
    return torch.cat(chunks)


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (initialisation, dropout) for one fold."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
