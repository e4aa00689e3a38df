"""OFF-ApexNet (Gan, Liong, Yau, Huang, Tan, "OFF-ApexNet on micro-expression
recognition system", Signal Processing: Image Communication 74, 2019).

Input: the u and v flow images (B, 2, 28, 28) as cached, normalised by the
``normalise`` option (:mod:`fr_mer.models.flow_input`: -1..1 on minmax255 caches). Each is
its own stream: conv 5x5, 6 filters, "same" -> ReLU -> 2x2 max-pool ->
conv 5x5, 16 filters, "same" -> ReLU -> 2x2 max-pool -> (16, 7, 7). The two
streams are flattened and concatenated (1,568), FC 1024 + ReLU, FC 1024 +
ReLU, dropout, FC 3.

Parameters: 2 x (156 + 2,416) convolutions + 1,606,656 + 1,049,600 + 3,075
= 2,664,475 (2.66 M). That is the count of the published layout; the
"about 2.77 M" quoted for OFF-ApexNet in some tables is not reached by any
reading of it we found (Off-TANet's re-implementation also counts 2.66 M).
The paper trained with Adam in TensorFlow; its exact schedule is not in a form
we could verify, so the default recipe is our practical choice, in line with
the inception models' (Adam 1e-3, batch 128) but with 40 epochs because the
dropout slows fitting; the network costs about a third of Dual-Inception per
sample, so a run is still cheaper. The last epoch is kept.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.models.base import Recipe
from fr_mer.models.flow_input import FlowInputModel


@register("off_apexnet")
class OffApexNet(FlowInputModel):
    inputs = {"flow": ("u", "v")}
    recipe = Recipe(epochs=40, batch_size=128, lr=1e-3, optimizer="adam")

    def __init__(self, n_classes: int = 3, hidden: int = 1024, dropout: float = 0.5, normalise: str = "auto") -> None:
        super().__init__()
        self.init_flow_input(normalise, 2)
        if not 0.0 <= dropout < 1.0:
            raise ParameterError(f"off_apexnet needs 0 <= dropout < 1, got {dropout}")
        self.n_classes = n_classes
        self.dropout = dropout
        # The two streams as grouped convolutions: same function as two separate stacks.
        self.conv1 = nn.Conv2d(2, 2 * 6, kernel_size=5, padding=2, groups=2)
        self.conv2 = nn.Conv2d(2 * 6, 2 * 16, kernel_size=5, padding=2, groups=2)
        self.fc1 = nn.Linear(2 * 16 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.normalise_flow(batch["flow"])
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = self.drop(F.relu(self.fc2(x)), self.dropout)
        return {"logits": self.fc3(x)}
