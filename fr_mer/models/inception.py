"""The Dual-Inception backbone (Zhou et al., FG 2019), shared by ``fr`` and ``dual_inception``.

Each flow channel (u, v, optionally strain) is its own stream. A stream is

    inception block (6 filters a branch)  -> 2x2 max-pool -> (24, 14, 14)
    inception block (16 filters a branch) -> 2x2 max-pool -> (64, 7, 7)

where an inception block has four "same"-padded branches, each ending in a ReLU:
1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool stride 1 -> 1x1, concatenated.
Per stream this is 11,620 parameters (1,284 + 10,336).

The three 1x1 convolutions that read a block's input are one convolution: the
same function and parameter count as three layers, with fewer kernel calls.
A stream pools each branch on its own before concatenating them (max-pooling
is per channel, so this is the same function, with the full-resolution
concatenation and the slicing of its gradient gone), and a block that reads
one channel computes its 1x1 convolutions as one matrix product each over
the pixels (a 1x1 convolution of one channel is ``w * x + b``); there the 1x1
and pool branches are pooled before they are computed (``relu(w * s + b)`` is
monotone in ``s``: its window maximum comes from the window's maximum or
minimum of ``s``), and the 3x3 and 5x5 branches pooled before their ReLU.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models.base import Recipe

#: Filters per branch of the two blocks, as in Dual-Inception.
DUAL_INCEPTION_FILTERS = (6, 16)

#: Flow channels a stream can read (the cache's ``flow`` column).
FLOW_CHANNELS = ("u", "v", "strain")

#: Training recipe of ``dual_inception`` and ``fr`` (the same, so that the
#: ablation of the proposal module changes nothing else). Dual-Inception's
#: public code used Adam 1e-4, batch 3, 40 epochs: about 5,800 steps per fold,
#: hours for 68 folds on two CPU cores. Adam 1e-3, batch 128, 20 epochs
#: (about 70 steps per fold) reached the published Dual-Inception figure on
#: the composite protocol (fr-model spec: 0.7250 UF1 against 0.7322) in about
#: ten minutes for all 68 folds, so it is the default; the last epoch is kept.
INCEPTION_RECIPE = Recipe(epochs=20, batch_size=128, lr=1e-3, optimizer="adam")


class InceptionBlock(nn.Module):
    """One inception block: (B, in_channels, H, W) -> (B, 4 * filters, H, W).

    Output channels in the order 1x1 | 3x3 | 5x5 | pool branch.
    """

    #: Layout of the 3x3/5x5 branch inputs; a stack of folds (fr_mer.func_stack) sets the default
    #: layout, which vmap needs.
    memory_format = torch.channels_last

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        self.filters = filters
        # One 1x1 convolution for the 1x1 branch and the two reductions.
        self.reduce = nn.Conv2d(in_channels, 3 * filters, kernel_size=1)
        self.conv3 = nn.Conv2d(filters, filters, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(filters, filters, kernel_size=5, padding=2)
        self.pool_proj = nn.Conv2d(in_channels, filters, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(x), dim=1)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``max_pool2d(self(x), 2)``, each branch pooled before the concatenation (4x fewer values to copy)."""
        if x.shape[1] == 1:
            return self._one_channel_pooled(x)
        return torch.cat([_pool2(branch) for branch in self.branches(x)], dim=1)

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four branch outputs (1x1, 3x3, 5x5, pool), each (B, filters, H, W), channels-last for 4-d input."""
        if x.shape[1] == 1:
            return self._one_channel_branches(x)
        b1, r3, r5 = self.reduce(x).relu_().split(self.filters, dim=1)
        # oneDNN reads only dense inputs: a channel slice of a channels-last map is copied either way.
        c3 = self.conv3(r3.contiguous(memory_format=self.memory_format)).relu_()
        c5 = self.conv5(r5.contiguous(memory_format=self.memory_format)).relu_()
        projected = self.pool_proj(F.max_pool2d(x, kernel_size=3, stride=1, padding=1)).relu_()
        return b1, c3, c5, projected

    def _one_channel_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # A 1x1 convolution of one channel is w * x + b per pixel: a (pixels, 1) x (1, out)
        # product, whose rows are the channels-last layout. oneDNN's kernels for one input
        # channel are several times slower (its weight gradient most of all), and one product
        # per branch gives each branch a dense map: nothing to slice and copy before conv3/conv5.
        plane = x.contiguous()  # (B, 1, H, W): one dense plane per sample, for the pixel rows and the pool
        f, weight, bias = self.filters, self.reduce.weight, self.reduce.bias
        b1, r3, r5 = (_pixel_products(weight[i * f:(i + 1) * f], bias[i * f:(i + 1) * f], plane) for i in range(3))
        pooled = F.max_pool2d(plane, kernel_size=3, stride=1, padding=1)
        projected = _pixel_products(self.pool_proj.weight, self.pool_proj.bias, pooled)
        return b1, self.conv3(r3).relu_(), self.conv5(r5).relu_(), projected

    def _one_channel_pooled(self, x: torch.Tensor) -> torch.Tensor:
        plane = x.contiguous()
        f, weight, bias = self.filters, self.reduce.weight, self.reduce.bias
        r3, r5 = (_pixel_products(weight[i * f:(i + 1) * f], bias[i * f:(i + 1) * f], plane) for i in (1, 2))
        pooled = F.max_pool2d(plane, kernel_size=3, stride=1, padding=1)
        # ReLU is monotone: relu(max(z)) = max(relu(z)), with the same gradient (a window whose
        # maximum is <= 0 passes none either way), on a quarter of the values.
        return torch.cat((
            _pooled_pixel_products(weight[:f], bias[:f], plane),
            _pool2(self.conv3(r3)).relu_(),
            _pool2(self.conv5(r5)).relu_(),
            _pooled_pixel_products(self.pool_proj.weight, self.pool_proj.bias, pooled),
        ), dim=1)


def _pool2(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=2, stride=2)


def _pixel_products(weight: torch.Tensor, bias: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
    """``relu(conv2d(plane, weight, bias))`` for a one-channel ``plane`` (B, 1, H, W) and a 1x1 ``weight``.

    One (pixels, 1) x (1, out) product; the result (B, out, H, W) is channels-last.
    """
    b, _, h, w = plane.shape
    out = torch.addmm(bias, plane.reshape(-1, 1), weight.view(-1, 1).t()).relu_()
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def _pooled_pixel_products(weight: torch.Tensor, bias: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(_pixel_products(weight, bias, plane), 2)``, computed at the pooled size.

    ``relu(w * s + b)`` rises with ``s`` where ``w >= 0`` and falls where ``w < 0``, so its
    maximum over a window is the same map of the window's largest ``s`` (its smallest where
    ``w < 0``): two 2x2 pools of the one-channel plane instead of a full-size map and its
    pooling per output channel. Same values and, where no weight is exactly 0, the same
    gradients (a zero weight's gradient reads the window's largest value rather than its first).
    """
    high = _pool2(plane)
    low = -_pool2(-plane)
    b, _, h, w = high.shape
    slope = weight.view(-1)
    selected = torch.where(slope >= 0, high.view(b, h, w, 1), low.view(b, h, w, 1))  # (B, H/2, W/2, out)
    return torch.addcmul(bias, selected, slope).relu_().permute(0, 3, 1, 2)


class InceptionStream(nn.Module):
    """One flow channel's stream: inception blocks, each followed by a 2x2 max-pool."""

    def __init__(self, filters: tuple[int, ...] = DUAL_INCEPTION_FILTERS) -> None:
        super().__init__()
        blocks, in_channels = [], 1
        for f in filters:
            blocks.append(InceptionBlock(in_channels, f))
            in_channels = 4 * f
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block.forward_pooled(x)
        return x


class InceptionBackbone(nn.Module):
    """Dual-Inception's feature extractor, one :class:`InceptionStream` per input channel.

    Input (B, streams, 28, 28); output (B, streams * 4 * filters[-1], 7, 7),
    stream-major channels: (B, 128, 7, 7) for u and v with the paper's filters.
    ``out_size(in_size)`` gives the output side for an input of side ``in_size``.

    The streams run in channels-last layout: measured on a 2-core Xeon, a training
    step of Dual-Inception at batch 128 takes about 0.35 s of CPU this way against
    0.47 s in the default layout and 0.64 s with the streams as grouped
    convolutions (oneDNN's grouped kernels are slow for these few channels).
    """

    #: The streams' layout; a stack of folds (fr_mer.func_stack) sets the default layout, which vmap needs.
    memory_format = torch.channels_last

    def __init__(self, streams: int = 2, filters: tuple[int, ...] = DUAL_INCEPTION_FILTERS) -> None:
        super().__init__()
        if streams < 1:
            raise ValueError(f"an inception backbone needs at least one stream, got {streams}")
        self.streams = nn.ModuleList(InceptionStream(filters) for _ in range(streams))
        self.out_channels = streams * self.streams[0].out_channels
        self._pools = len(filters)

    def out_size(self, in_size: int = 28) -> int:
        for _ in range(self._pools):
            in_size //= 2
        return in_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != len(self.streams):
            raise ValueError(f"expected (B, {len(self.streams)}, H, W) flow images, got shape {tuple(x.shape)}")
        outs = [
            stream(x[:, i:i + 1].contiguous(memory_format=self.memory_format))
            for i, stream in enumerate(self.streams)
        ]
        return torch.cat(outs, dim=1).contiguous()


def check_flow_channels(channels: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """Validate a model's ``channels`` option: distinct names from :data:`FLOW_CHANNELS`."""
    if isinstance(channels, str):
        channels = tuple(c.strip() for c in channels.split(","))
    channels = tuple(channels)
    bad = [c for c in channels if c not in FLOW_CHANNELS]
    if not channels or bad or len(set(channels)) != len(channels):
        raise ParameterError(
            f"channels must be distinct names from {', '.join(FLOW_CHANNELS)} "
            f"(e.g. u,v or u,v,strain), got {channels!r}"
        )
    return channels
