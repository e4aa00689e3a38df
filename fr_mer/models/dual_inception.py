"""Dual-Inception (Zhou, Mao, Xue, "Dual-Inception Network for Cross-Database
Micro-Expression Recognition", FG 2019): FR's backbone with its plain head.

Input: the u and v flow images (B, 2, 28, 28) as cached, normalised by the
``normalise`` option (:mod:`fr_mer.models.flow_input`). Each
is its own inception stream (:mod:`fr_mer.models.inception`) -> (64, 7, 7);
the two are flattened and concatenated (6,272), Dense 1024 + ReLU, Dense 3.
No batch norm, no dropout (``dropout`` > 0 adds one before Dense 3: a
control for FR's head, not the paper's network). 6,449,867 parameters with
u and v (2 x 11,620 backbone + 6,423,552 + 3,075).

In fr-mer this is the ablation of FR's expression proposal module: the same
backbone, inputs, recipe, folds and seeds, with the plain head in place of the
proposal module and fusion classifier.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.models.flow_input import FlowInputModel
from fr_mer.models.inception import DUAL_INCEPTION_FILTERS, INCEPTION_RECIPE, InceptionBackbone, check_flow_channels


@register("dual_inception")
class DualInception(FlowInputModel):
    inputs = {"flow": ("u", "v")}
    recipe = INCEPTION_RECIPE
    minmax_modes = ("range", "median")

    def __init__(self, n_classes: int = 3, channels: tuple[str, ...] = ("u", "v"), hidden: int = 1024,
                 dropout: float = 0.0, normalise: str = "auto") -> None:
        super().__init__()
        channels = check_flow_channels(channels)
        if not 0.0 <= dropout < 1.0:
            raise ParameterError(f"dual_inception needs 0 <= dropout < 1, got {dropout}")
        self.init_flow_input(normalise, len(channels))
        self.dropout = dropout
        # Per instance, so that ("u", "v", "strain") asks the data layer for strain too.
        self.inputs = {"flow": channels}
        self.n_classes = n_classes
        self.backbone = InceptionBackbone(streams=len(channels), filters=DUAL_INCEPTION_FILTERS)
        size = self.backbone.out_size(28)
        self.fc1 = nn.Linear(self.backbone.out_channels * size * size, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def augment(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Left-right mirroring (``Recipe.augment``): :func:`~fr_mer.models.flow_input.flip_flow`."""
        return self.mirror_flow(batch, generator)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.backbone(self.normalise_flow(batch["flow"]))
        hidden = self.drop(F.relu(self.fc1(x.flatten(1))), self.dropout)
        return {"logits": self.fc2(hidden)}
