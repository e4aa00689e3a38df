"""STSTNet (Liong et al., "Shallow Triple Stream Three-dimensional CNN", FG 2019).

Input: (B, 3, 28, 28) optical-flow image in STSTNet's channel order
(strain, v, u): on a minmax255 cache values 0..255 as the released inputs are,
fed as they are; on a raw cache divided by a per-channel scale fitted on the
training rows (the ``normalise`` option, :mod:`fr_mer.models.flow_input`). Three parallel 3x3
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
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.models.base import Recipe
from fr_mer.models.flow_input import SCALE, FlowInputModel
from fr_mer.ops import (avg_pool_linear, conv_relu_bn_maxpool, dropout, masked_channel_statistics,
                        masked_conv_relu_bn_maxpool, update_running_statistics)

_STREAMS = (("conv1", "bn1", 3), ("conv2", "bn2", 5), ("conv3", "bn3", 8))


@register("ststnet")
class STSTNet(FlowInputModel):
    inputs = {"flow": ("strain", "v", "u")}
    # The public code: Adam 5e-5, batch 256, 800 epochs, last epoch kept.
    recipe = Recipe(epochs=800, batch_size=256, lr=5e-5, optimizer="adam")
    #: On minmax255 caches the released inputs' 0..255 values, as the public code feeds them.
    minmax_modes = ("identity",)

    def __init__(self, n_classes: int = 3, dropout: float = 0.5, normalise: str = "auto") -> None:
        super().__init__()
        self.init_flow_input(normalise, 3)
        if not 0.0 <= dropout < 1.0:
            raise ParameterError(f"ststnet needs 0 <= dropout < 1, got {dropout}")
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
            self.normalise_flow(batch["flow"]), self.conv.weight, self.conv.bias, bn.weight, bn.bias,
            bn.running_mean if bn.track_running_stats else None,
            bn.running_var if bn.track_running_stats else None,
            training=use_batch_stats, momentum=momentum, eps=bn.eps,
            conv_padding=2, pool_kernel=3, pool_stride=3, pool_padding=1)
        x = self.drop(x, self.dropout)
        return {"logits": avg_pool_linear(x, self.fc.weight, self.fc.bias, 2)}

    # -- released key names <-> merged layers ------------------------------
    @staticmethod
    def _merge_released_keys(state_dict, prefix, *args) -> None:
        if prefix + "conv1.weight" not in state_dict:
            return
        for merged, part in (("conv", 0), ("bn", 1)):
            names = [s[part] for s in _STREAMS]
            suffixes = {k[len(prefix + names[0]) + 1:] for k in state_dict if k.startswith(prefix + names[0] + ".")}
            # Merge only a complete released layout; anything else is left for load_state_dict to report.
            if not all(f"{prefix}{n}.{suffix}" in state_dict for n in names for suffix in suffixes):
                return
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


class StackedSTSTNet(nn.Module):
    """``F`` independent STSTNets computed as one network, for :mod:`fr_mer.fold_stack`.

    Every parameter and buffer carries a leading fold dimension: the
    convolution is grouped (one 3->16 group per fold), batch norm keeps its
    statistics per fold and channel, and the linear layer is a batched product.
    Fold ``f`` computes exactly what ``models[f]`` computes.

    Input ``batch["flow"]``: (B, F, 3, 28, 28), sample-major so that a batch
    gathered as rows ``index.t().reshape(-1)`` needs no copy; ``mask``: (B, F)
    bool, False for padding (a fold whose batch is shorter than the others'),
    which is left out of the batch statistics. Returns logits (B, F, n_classes).
    The convolution-to-pooling stage is :func:`~fr_mer.ops.masked_conv_relu_bn_maxpool`
    (fewer passes over the 1 GB of activations a 68-fold stack makes per step);
    ``fused = False`` computes it with plain autograd operations instead.
    """

    def __init__(self, models: "list[STSTNet]") -> None:
        super().__init__()
        first = models[0]
        if first.bn.momentum is None:
            raise ValueError("stacked STSTNet needs a batch-norm momentum (None is not supported)")
        self.models = list(models)  # a plain list: their parameters are copied, not registered twice
        self.n_folds = len(models)
        self.n_classes = first.n_classes
        self.dropout = first.dropout
        self.momentum = float(first.bn.momentum)
        self.eps = first.bn.eps
        #: The generator dropout draws from (set by fr_mer.fold_stack.train_stacked); None: torch's global one.
        self.generator: torch.Generator | None = None
        # The hand-fused convolution-ReLU-batch norm-pooling pass (fr_mer.ops); False: plain
        # autograd operations (the reference the fused pass is tested against).
        self.fused = True

        def stack(get) -> torch.Tensor:
            return torch.stack([get(m).detach() for m in models]).clone()

        self.conv_weight = nn.Parameter(stack(lambda m: m.conv.weight))  # (F, 16, 3, 3, 3)
        self.conv_bias = nn.Parameter(stack(lambda m: m.conv.bias))  # (F, 16)
        self.bn_weight = nn.Parameter(stack(lambda m: m.bn.weight))
        self.bn_bias = nn.Parameter(stack(lambda m: m.bn.bias))
        self.fc_weight = nn.Parameter(stack(lambda m: m.fc.weight))  # (F, n, 400)
        self.fc_bias = nn.Parameter(stack(lambda m: m.fc.bias))  # (F, n)
        self.register_buffer("running_mean", stack(lambda m: m.bn.running_mean))
        self.register_buffer("running_var", stack(lambda m: m.bn.running_var))
        self.register_buffer("num_batches_tracked", stack(lambda m: m.bn.num_batches_tracked))
        # Raw caches: each fold's input scale, fitted on its own training rows (F, 3).
        self.scaled = first.flow_mode == SCALE
        if self.scaled:
            self.register_buffer("input_scale", stack(lambda m: m.input_scale))

    def forward(self, batch: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        flow = batch["flow"]
        b, f = flow.shape[:2]
        if f != self.n_folds:
            raise ValueError(f"batch holds {f} folds, the stack {self.n_folds}")
        width = self.conv_weight.shape[1]
        if self.scaled:
            flow = flow / self.input_scale.view(1, f, -1, 1, 1)
        x = flow.reshape(b, f * flow.shape[2], *flow.shape[3:])
        if mask is None:
            mask = torch.ones(b, f, dtype=torch.bool, device=x.device)
        if self.training:
            self.num_batches_tracked.add_(mask.any(0).to(self.num_batches_tracked.dtype))
        if self.fused:
            x = masked_conv_relu_bn_maxpool(
                x, self.conv_weight.flatten(0, 1), self.conv_bias.flatten(), self.bn_weight.flatten(),
                self.bn_bias.flatten(), self.running_mean.view(-1), self.running_var.view(-1), mask, groups=f,
                training=self.training, momentum=self.momentum, eps=self.eps, conv_padding=2,
                pool_kernel=3, pool_stride=3, pool_padding=1)
        else:
            r = F.conv2d(x, self.conv_weight.flatten(0, 1), self.conv_bias.flatten(), padding=2, groups=f).relu_()
            if self.training:
                mean, var, n = masked_channel_statistics(r, mask.to(r.dtype).repeat_interleave(width, dim=1))
                update_running_statistics(self.running_mean.view(-1), self.running_var.view(-1), mean, var, n,
                                          self.momentum)
            else:
                mean, var = self.running_mean.flatten(), self.running_var.flatten()
            scale = self.bn_weight.flatten() * torch.rsqrt(var + self.eps)
            shift = self.bn_bias.flatten() - mean * scale
            x = torch.addcmul(shift.view(1, -1, 1, 1), r, scale.view(1, -1, 1, 1))
            x = F.max_pool2d(x, kernel_size=3, stride=3, padding=1)
        if self.training and self.dropout > 0:
            x = dropout(x, self.dropout, generator=self.generator)
        features = F.avg_pool2d(x, kernel_size=2, stride=2).reshape(b, f, -1)
        return torch.einsum("bfk,fnk->bfn", features, self.fc_weight) + self.fc_bias

    @torch.no_grad()
    def unstack(self) -> "list[STSTNet]":
        """Copy each fold's parameters and buffers back into its own :class:`STSTNet`; returns them."""
        for i, model in enumerate(self.models):
            model.conv.weight.copy_(self.conv_weight[i])
            model.conv.bias.copy_(self.conv_bias[i])
            model.bn.weight.copy_(self.bn_weight[i])
            model.bn.bias.copy_(self.bn_bias[i])
            model.bn.running_mean.copy_(self.running_mean[i])
            model.bn.running_var.copy_(self.running_var[i])
            model.bn.num_batches_tracked.copy_(self.num_batches_tracked[i])
            model.fc.weight.copy_(self.fc_weight[i])
            model.fc.bias.copy_(self.fc_bias[i])
            if self.scaled:
                model.input_scale.copy_(self.input_scale[i])
        return self.models


STSTNet.stacked = StackedSTSTNet  # the form fr_mer.fold_stack trains many folds with
