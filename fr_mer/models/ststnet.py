"""STSTNet (Liong et al., "Shallow Triple Stream Three-dimensional CNN", FG 2019).

Input: (B, 3, 28, 28) optical-flow image in STSTNet's channel order
(strain, v, u), values 0..255 as the released inputs are. Three parallel 3x3
convolutions (3, 5 and 8 filters, padding 2), each ReLU -> BatchNorm -> 3x3
max-pool stride 3 padding 1 -> dropout 0.5; concatenation (16 channels),
2x2 average pool -> 5x5x16 = 400 -> linear to 3. 1,683 parameters (the paper
says 1,670; this is the count of the network its code releases).

The three streams are computed as one 3->16 convolution and one 16-channel
batch norm: every later operation is per channel, so this is the same function
with a third of the passes. State dicts keep the released key names (conv1..3,
bn1..3, fc) in both directions, so STSTNet's released weights load unchanged.

Training is memory-bound (a few MFLOP per sample, most time in passes over the
16 x 30 x 30 activations), so the forward pass is written to make fewer of
them (:mod:`fr_mer.ops`): ReLU inside the convolution, batch norm applied to
the 10 x 10 pooled maps (a per-channel affine map commutes with max-pooling,
exactly; statistics still from the full maps) with a hand-written backward
pass, dropout masks from 64 random bits per draw, and the average pool folded
into the linear layer. tests/test_ststnet.py checks it against the plain
three-stream network; benchmarks/train_speed.py times it against the public
training script.
"""
from __future__ import annotations

import torch
from torch import nn

from fr_mer.models import register
from fr_mer.models.base import MERModel, Recipe
from fr_mer.ops import avg_pool_linear, conv_relu_bn_maxpool, dropout

_STREAMS = (("conv1", "bn1", 3), ("conv2", "bn2", 5), ("conv3", "bn3", 8))


@register("ststnet")
class STSTNet(MERModel):
    inputs = {"flow": ("strain", "v", "u")}
    # The public code: Adam 5e-5, batch 256, 800 epochs, last epoch kept.
    recipe = Recipe(epochs=800, batch_size=256, lr=5e-5, optimizer="adam")

    def __init__(self, n_classes: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.dropout = dropout
        width = sum(c for _, _, c in _STREAMS)
        self.conv = nn.Conv2d(3, width, kernel_size=3, padding=2)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(5 * 5 * width, n_classes)
        self._register_load_state_dict_pre_hook(self._merge_released_keys)
        self._register_state_dict_hook(self._split_to_released_keys)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        bn = self.bn
        momentum = bn.momentum
        if self.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
                momentum = 1.0 / float(bn.num_batches_tracked)
        use_batch_stats = self.training or not bn.track_running_stats
        x = conv_relu_bn_maxpool(
            batch["flow"], self.conv.weight, self.conv.bias, bn.weight, bn.bias,
            bn.running_mean if bn.track_running_stats else None,
            bn.running_var if bn.track_running_stats else None,
            training=use_batch_stats, momentum=momentum, eps=bn.eps,
            conv_padding=2, pool_kernel=3, pool_stride=3, pool_padding=1)
        if self.training and self.dropout > 0:
            x = dropout(x, self.dropout)
        return {"logits": avg_pool_linear(x, self.fc.weight, self.fc.bias, 2)}

    # -- released key names <-> merged layers ------------------------------
    @staticmethod
    def _merge_released_keys(state_dict, prefix, *args) -> None:
        if prefix + "conv1.weight" not in state_dict:
            return
        for merged, part in (("conv", 0), ("bn", 1)):
            names = [s[part] for s in _STREAMS]
            suffixes = {k[len(prefix + names[0]) + 1:] for k in state_dict if k.startswith(prefix + names[0] + ".")}
            for suffix in suffixes:
                pieces = [state_dict.pop(f"{prefix}{n}.{suffix}") for n in names]
                if suffix == "num_batches_tracked":
                    state_dict[f"{prefix}{merged}.{suffix}"] = pieces[0]
                else:
                    state_dict[f"{prefix}{merged}.{suffix}"] = torch.cat(pieces, dim=0)

    @staticmethod
    def _split_to_released_keys(module, state_dict, prefix, local_metadata) -> None:
        for merged, part in (("conv", 0), ("bn", 1)):
            keys = [k for k in list(state_dict) if k.startswith(f"{prefix}{merged}.")]
            for key in keys:
                value = state_dict.pop(key)
                suffix = key[len(prefix + merged) + 1:]
                start = 0
                for stream in _STREAMS:
                    name, width = stream[part], stream[2]
                    if suffix == "num_batches_tracked":
                        state_dict[f"{prefix}{name}.{suffix}"] = value.clone()
                    else:
                        state_dict[f"{prefix}{name}.{suffix}"] = value[start:start + width].clone()
                    start += width
