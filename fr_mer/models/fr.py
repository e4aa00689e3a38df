"""Feature Refinement (FR; Zhou, Mao, Huang, Zhang, Zhang, arXiv 2101.04838, 2021;
"FeatRef" in Pattern Recognition 122, 2022).

What the paper's abstract fixes: an inception module on optical flow gives
expression-shared features; an expression proposal module with attention
factors and a proposal loss turns them into expression-specific features, one
set per class; a classification branch predicts the label from a fusion of
them. Everything else is an option of this class; the defaults are the
variant that did best in our search (docs/benchmarks.md, "How FR's defaults
were chosen"; the options are in docs/models.md, "`fr`: Feature Refinement"),
where every head was within about a point of the others:

    flow (B, S, 28, 28) --inception streams--> shared  X (B, C, 7, 7)
    for each class k:
        map attention     A_k(X)          ("spatial": sigmoid map (7, 7);
                                            "channel": sigmoid gate per channel;
                                            otherwise 1)
        specific feature  f_k = ReLU(W_k vec(A_k * X))          (branch_dim)
        proposal score    s_k = p_k . f_k                       ("is it class k?")
        feature gate      f_k <- sigmoid(s_k) f_k               ("proposal", default)
                          f_k <- sigmoid(g_k . f_k) f_k         ("scalar": own gate)
    fusion  z = [f_1 .. f_K] ("concat", default) or sum_k f_k ("sum")
    logits  = Linear(dropout(z))

    loss = CE(logits, y) + proposal_weight * mean_k BCE(s_k, [y == k])

With the default ``attention="proposal"`` the attention factor of branch k is
its own proposal probability: the branch that the proposal loss trains to say
"this is class k" passes its features to the classifier in proportion to how
sure it is. The proposal loss is one-vs-rest binary cross-entropy on each
branch's score ("bce"), or the same with each class's positives weighted by
the batch's negatives-to-positives ratio ("balanced_bce"); "none" removes it.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.models.flow_input import FlowInputModel
from fr_mer.models.inception import DUAL_INCEPTION_FILTERS, INCEPTION_RECIPE, InceptionBackbone, check_flow_channels

ATTENTIONS = ("spatial", "channel", "scalar", "proposal", "none")
FUSIONS = ("concat", "sum")
PROPOSAL_LOSSES = ("bce", "balanced_bce", "none")


@register("fr")
class FeatureRefinement(FlowInputModel):
    inputs = {"flow": ("u", "v")}
    recipe = INCEPTION_RECIPE
    minmax_modes = ("range", "median")

    def __init__(
        self,
        n_classes: int = 3,
        channels: tuple[str, ...] = ("u", "v"),
        attention: str = "proposal",
        branch_dim: int = 256,
        fusion: str = "concat",
        proposal_loss: str = "bce",
        proposal_weight: float = 1.0,
        dropout: float = 0.0,
        channel_reduction: int = 8,
        normalise: str = "auto",
    ) -> None:
        super().__init__()
        channels = check_flow_channels(channels)
        _check_choice("attention", attention, ATTENTIONS)
        _check_choice("fusion", fusion, FUSIONS)
        _check_choice("proposal_loss", proposal_loss, PROPOSAL_LOSSES)
        if branch_dim < 1 or not 0.0 <= dropout < 1.0 or proposal_weight < 0 or channel_reduction < 1:
            raise ParameterError(
                "fr needs branch_dim >= 1, 0 <= dropout < 1, proposal_weight >= 0 and channel_reduction >= 1; "
                f"got branch_dim={branch_dim}, dropout={dropout}, proposal_weight={proposal_weight}, "
                f"channel_reduction={channel_reduction}"
            )
        # Per instance, so that ("u", "v", "strain") asks the data layer for strain too.
        self.inputs = {"flow": channels}
        self.n_classes = n_classes
        self.init_flow_input(normalise, len(channels))
        self.attention, self.fusion, self.dropout = attention, fusion, dropout
        self.proposal_loss, self.proposal_weight = proposal_loss, proposal_weight

        self.backbone = InceptionBackbone(streams=len(channels), filters=DUAL_INCEPTION_FILTERS)
        c, size = self.backbone.out_channels, self.backbone.out_size(28)
        k, d = n_classes, branch_dim
        if attention == "spatial":
            self.attend = nn.Conv2d(c, k, kernel_size=1)
        elif attention == "channel":
            hidden = max(1, c // channel_reduction)
            self.squeeze = _BranchLinear(k, c, hidden)
            self.excite = _BranchLinear(k, hidden, c)
        elif attention == "scalar":
            self.gate = _BranchLinear(k, d, 1)
        self.branch = _BranchLinear(k, c * size * size, d)
        self.propose = _BranchLinear(k, d, 1)
        self.classifier = nn.Linear(k * d if fusion == "concat" else d, n_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.backbone(self.normalise_flow(batch["flow"]))  # (B, C, S, S) expression-shared
        b, k = x.shape[0], self.n_classes
        if self.attention == "spatial":
            maps = torch.sigmoid(self.attend(x))  # (B, K, S, S)
            specific = self.branch((x.unsqueeze(1) * maps.unsqueeze(2)).flatten(2))
        elif self.attention == "channel":
            pooled = x.mean(dim=(2, 3)).unsqueeze(1).expand(b, k, -1)
            gates = torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))  # (B, K, C)
            specific = self.branch((x.unsqueeze(1) * gates[..., None, None]).flatten(2))
        else:
            specific = self.branch.shared_input(x.flatten(1))
        specific = F.relu(specific)  # (B, K, D) expression-specific
        if self.attention == "scalar":
            specific = specific * torch.sigmoid(self.gate(specific))
        scores = self.propose(specific).squeeze(-1)  # (B, K)
        if self.attention == "proposal":
            specific = specific * torch.sigmoid(scores).unsqueeze(-1)
        fused = specific.flatten(1) if self.fusion == "concat" else specific.sum(dim=1)
        fused = self.drop(fused, self.dropout)
        return {"logits": self.classifier(fused), "proposal_scores": scores}

    def augment(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Left-right mirroring (``Recipe.augment``): :func:`~fr_mer.models.flow_input.flip_flow`."""
        return self.mirror_flow(batch, generator)

    def loss(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(outputs["logits"], target)
        if self.proposal_loss == "none" or self.proposal_weight == 0:
            return ce
        return ce + self.proposal_weight * proposal_loss(
            outputs["proposal_scores"], target, balanced=self.proposal_loss == "balanced_bce"
        )


def proposal_loss(scores: torch.Tensor, target: torch.Tensor, balanced: bool = False) -> torch.Tensor:
    """One-vs-rest binary cross-entropy of the class branches' proposal scores.

    scores: (B, K) logits, branch k saying "this sample is class k"; target: (B,)
    class indices. Returns the mean over the B * K terms of
    ``-[y_k log sigmoid(s_k) + (1 - y_k) log(1 - sigmoid(s_k))]`` with
    ``y_k = [target == k]``. With ``balanced``, class k's positive terms are
    weighted by (negatives / positives of class k in the batch), 1 when the
    batch has no positive of class k, so that each branch sees its two sides
    with equal total weight.
    """
    labels = F.one_hot(target, scores.shape[1]).to(scores.dtype)
    pos_weight = None
    if balanced:
        positives = labels.sum(dim=0)
        negatives = labels.shape[0] - positives
        pos_weight = torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones_like(positives))
    return F.binary_cross_entropy_with_logits(scores, labels, pos_weight=pos_weight)


class _BranchLinear(nn.Module):
    """K independent linear maps, one per class branch: (B, K, I) -> (B, K, O).

    Initialised like ``nn.Linear`` (uniform in +-1/sqrt(I)) branch by branch.
    """

    #: True: plain autograd instead of the hand-written products, which torch.func's vmap cannot
    #: trace; a stack of folds (fr_mer.func_stack) sets it.
    vmap_safe = False

    def __init__(self, branches: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(branches, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(branches, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bki,kio->bko", x, self.weight) + self.bias

    def shared_input(self, x: torch.Tensor) -> torch.Tensor:
        """All branches applied to the same (B, I) input: (B, K, O)."""
        if self.vmap_safe:
            return torch.einsum("bi,kio->bko", x, self.weight) + self.bias
        return _SharedInputBranches.apply(x, self.weight, self.bias)


class _SharedInputBranches(torch.autograd.Function):
    """``out[:, k] = x @ weight[k] + bias[k]``, with each branch's (I, O) weight read where it lies.

    One matrix product over ``weight`` rearranged to (I, K * O) costs a copy of
    the weight forward and of its gradient backward (two passes over FR's
    4.8 M parameters per step); K products on the weight's own blocks do not.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        out = torch.stack([torch.mm(x, w) for w in weight], dim=1)  # (B, K, O)
        return out.add_(bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out[:, 0].mm(weight[0].t())
            for k in range(1, weight.shape[0]):
                grad_x.addmm_(grad_out[:, k], weight[k].t())
        if ctx.needs_input_grad[1]:
            x_t = x.t()
            grad_weight = torch.stack([x_t.mm(grad_out[:, k]) for k in range(weight.shape[0])])
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=0)
        return grad_x, grad_weight, grad_bias


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParameterError(f"fr option {name} must be one of {', '.join(choices)}, got {value!r}")
