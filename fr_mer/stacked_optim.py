"""Optimisers over parameters whose first dimension is the fold: each fold's own torch.optim step.

A stack of F folds (:mod:`fr_mer.fold_stack`, :mod:`fr_mer.func_stack`) holds
every parameter as one tensor (F, ...). These optimisers keep one step count
and one set of moment (or momentum) buffers per fold and move fold f exactly
as ``torch.optim.Adam``/``AdamW``/``SGD`` would move that fold's own network; a
fold that is not active in a step (no batch left for it) keeps its parameters
and buffers unchanged, as a fold trained alone that takes no step.
"""
from __future__ import annotations

from typing import Sequence

import torch

from fr_mer.models.base import Recipe


def _fold_view(active: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return active.view((-1,) + (1,) * (p.dim() - 1))


def _check_fold_dimension(params: Sequence[torch.Tensor], n_folds: int) -> None:
    for p in params:
        if p.shape[0] != n_folds:
            raise ValueError(f"a stacked parameter of shape {tuple(p.shape)} has no leading fold dimension")


class StackedAdam:
    """Adam (or AdamW) over parameters whose first dimension is the fold, with a step count per fold.

    The update of every fold is torch.optim.Adam's; a fold that is not active
    in a step keeps its parameters and moment estimates unchanged, as a fold
    trained alone that takes no step.
    """

    def __init__(self, params: Sequence[torch.Tensor], n_folds: int, *, lr: float, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False) -> None:
        self.params = [p for p in params if p.requires_grad]
        _check_fold_dimension(self.params, n_folds)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        device = self.params[0].device
        self.steps = torch.zeros(n_folds, device=device)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the folds where ``active`` (F,) is True."""
        beta1, beta2 = self.betas
        on = active.to(self.steps.dtype)
        self.steps += on
        steps = self.steps.clamp(min=1.0)
        step_size = self.lr / (1 - beta1 ** steps)
        bias2_sqrt = (1 - beta2 ** steps).sqrt()
        for p, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            keep = _fold_view(active, p)
            grad = p.grad
            if self.weight_decay and not self.decoupled:
                grad = grad + self.weight_decay * p
            exp_avg.copy_(torch.where(keep, exp_avg * beta1 + grad * (1 - beta1), exp_avg))
            exp_avg_sq.copy_(torch.where(keep, exp_avg_sq * beta2 + grad * grad * (1 - beta2), exp_avg_sq))
            denom = exp_avg_sq.sqrt() / bias2_sqrt.view(shape) + self.eps
            update = exp_avg / denom * step_size.view(shape)
            if self.weight_decay and self.decoupled:
                update = update + self.lr * self.weight_decay * p
            p.sub_(update * on.view(shape))


class StackedSGD:
    """SGD with momentum (torch.optim.SGD's, no dampening, not Nesterov) per fold.

    torch's first step sets the momentum buffer to the gradient; a buffer that
    starts at zero gives the same value (``momentum * 0 + grad``), so no
    per-fold first-step flag is needed.
    """

    def __init__(self, params: Sequence[torch.Tensor], n_folds: int, *, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        _check_fold_dimension(self.params, n_folds)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the folds where ``active`` (F,) is True."""
        for p, buffer in zip(self.params, self.buffers):
            if p.grad is None:
                continue
            keep = _fold_view(active, p)
            grad = p.grad + self.weight_decay * p if self.weight_decay else p.grad
            if self.momentum:
                buffer.copy_(torch.where(keep, buffer * self.momentum + grad, buffer))
                grad = buffer
            p.sub_(torch.where(keep, grad * self.lr, torch.zeros_like(grad)))


def make_stacked_optimizer(params: Sequence[torch.Tensor], n_folds: int, recipe: Recipe):
    """The recipe's optimiser (as :func:`fr_mer.training.make_optimizer` builds it), one per fold, stacked."""
    if recipe.optimizer == "sgd":
        return StackedSGD(params, n_folds, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return StackedAdam(params, n_folds, lr=recipe.lr, weight_decay=recipe.weight_decay,
                       decoupled=recipe.optimizer == "adamw")
