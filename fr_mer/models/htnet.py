"""HTNet (Wang, Zhang, Luo, Sankaranarayana; arXiv 2307.14637): a peer, not a seed method.

Input: the 28x28 (u, v, strain) flow, cache column ``flow`` in the released
images' channel order (strain, v, u): on a minmax255 cache values 0..255 as the
script feeds them, on a raw cache divided by a per-channel scale fitted on the
training rows (the ``normalise`` option, :mod:`fr_mer.models.flow_input`),
and the 68 landmarks on the flow's pixel grid (``flow_landmarks``,
:mod:`fr_mer.data`).

Regions (:func:`region_centres`, :func:`tile_regions`): four 14x14 crops of
the flow centred on the image-left eye (mean of dlib points 36-41), the
image-left mouth corner (48), the image-right eye (42-47) and the image-right
mouth corner (54), centres rounded to whole pixels and clamped to [7, 21] so a
crop never leaves the image; tiled into one 28x28 image, left eye | left lip
on top, right eye | right lip below.

Network (:class:`HTNet`): 7x7 patches embedded by a 1x1 convolution to
``dim`` channels (a 4x4 map); ``len(block_repeats)`` hierarchies, from the
finest (the map cut into 2^(h-1) x 2^(h-1) blocks, self-attention inside each
block only) to the coarsest (one block). Each hierarchy is a stack of pre-norm
transformer blocks on channel-first maps (channel LayerNorm, attention with
1x1-convolution projections, a 1x1-convolution MLP with GELU) after a learned
positional term (one scalar per position, shared by the channels); between
hierarchies an aggregation (3x3 convolution to twice the channels, channel
LayerNorm, 3x3/2 max-pool) halves the map. Head: channel LayerNorm, mean
over positions, linear. Channels and heads double at each hierarchy:
``dim`` x (1, 2, 4), ``heads`` x (1, 2, 4).

Written from the paper's description and the public script's settings (image
28, patch 7, dim 256, heads 3, hierarchies of 2, 2, 10 blocks; Adam 5e-5,
batch 256, 800 epochs). Two of the script's habits are not copied
(docs/models.md): it indexes the flow image as ``[x, y]`` (rows by the x
coordinate) and names its crops out of MTCNN's landmark order; here regions are
cut at (row y, column x) and named by the landmark they are centred on.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.models.base import Recipe
from fr_mer.models.flow_input import FlowInputModel
from fr_mer.pipeline.align import LEFT_EYE, RIGHT_EYE
from fr_mer.pipeline.flow import DEFAULT_FEATURE_SIZE

#: Side of the flow image and of the tiled regions (the released inputs'), and half a region's side.
FLOW_SIDE = DEFAULT_FEATURE_SIZE
REGION_HALF = 7

#: Region centres (x, y) on the 28 px flow for a sample without landmarks (no
#: face was found): the public script's fallback points for its eyes and mouth
#: corners, in the tiling order left eye, left lip, right eye, right lip.
DEFAULT_CENTRES = ((9.528073, 11.062551), (10.255435, 22.121233), (21.396168, 10.919773), (20.583706, 22.25584))

_LEFT_MOUTH, _RIGHT_MOUTH = 48, 54


def region_centres(landmarks: torch.Tensor, side: int = FLOW_SIDE, half: int = REGION_HALF) -> torch.Tensor:
    """(B, 68, 2) landmarks (x, y) on the flow grid -> (B, 4, 2) integer centres (x, y).

    Order: left eye, left mouth corner, right eye, right mouth corner (image
    left and right). Rounded to whole pixels, clamped to [half, side - half];
    a sample with any NaN among the points used takes :data:`DEFAULT_CENTRES`.
    """
    points = torch.stack(
        [
            landmarks[:, LEFT_EYE].mean(dim=1),
            landmarks[:, _LEFT_MOUTH],
            landmarks[:, RIGHT_EYE].mean(dim=1),
            landmarks[:, _RIGHT_MOUTH],
        ],
        dim=1,
    )
    default = torch.tensor(DEFAULT_CENTRES, dtype=points.dtype, device=points.device) * (side / FLOW_SIDE)
    unknown = torch.isnan(points).flatten(1).any(dim=1)
    points = torch.where(unknown.view(-1, 1, 1), default.expand_as(points), points)
    return torch.round(points).clamp(half, side - half).long()


def tile_regions(flow: torch.Tensor, centres: torch.Tensor, half: int = REGION_HALF) -> torch.Tensor:
    """(B, C, H, W) flow, (B, 4, 2) centres (x, y) -> (B, C, 4 half, 4 half) tiled regions.

    Region ``k`` is ``flow[:, :, y_k - half : y_k + half, x_k - half : x_k + half]``;
    regions 0, 1 form the top row, 2, 3 the bottom row.
    """
    b, c = flow.shape[:2]
    offsets = torch.arange(-half, half, device=flow.device)
    rows = (centres[:, :, 1:2] + offsets).view(b, 4, 2 * half, 1)
    cols = (centres[:, :, 0:1] + offsets).view(b, 4, 1, 2 * half)
    batch = torch.arange(b, device=flow.device).view(b, 1, 1, 1)
    regions = flow.permute(0, 2, 3, 1)[batch, rows, cols]  # (B, 4, 2h, 2h, C)
    top = torch.cat([regions[:, 0], regions[:, 1]], dim=2)
    bottom = torch.cat([regions[:, 2], regions[:, 3]], dim=2)
    return torch.cat([top, bottom], dim=1).permute(0, 3, 1, 2)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each position of a (B, C, H, W) map (biased variance)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class ConvSelfAttention(nn.Module):
    """Multi-head self-attention over the positions of a (B, C, H, W) map, 1x1-convolution projections.

    Each head has ``C // heads`` channels (the script's choice, so ``heads``
    need not divide ``C``); queries, keys and values without bias, output
    projection with bias.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        if self.head_dim < 1:
            raise ParameterError(f"htnet: {heads} heads do not fit {dim} channels")
        inner = self.head_dim * heads
        self.qkv = nn.Conv2d(dim, 3 * inner, 1, bias=False)
        self.out = nn.Conv2d(inner, dim, 1)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.qkv(x).view(b, 3, self.heads, self.head_dim, h * w).transpose(-1, -2).unbind(1)
        weights = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
        weights = F.dropout(weights, self.dropout, self.training)
        y = (weights @ v).transpose(-1, -2).reshape(b, -1, h, w)
        return F.dropout(self.out(y), self.dropout, self.training)


class ConvFeedForward(nn.Sequential):
    """1x1 convolution to ``mult`` times the channels, GELU, 1x1 convolution back (dropout after each)."""

    def __init__(self, dim: int, mult: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Conv2d(dim, dim * mult, 1), nn.GELU(), nn.Dropout(dropout),
            nn.Conv2d(dim * mult, dim, 1), nn.Dropout(dropout),
        )


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(LN x)``, then ``x + mlp(LN x)``."""

    def __init__(self, dim: int, heads: int, mlp_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attention = ConvSelfAttention(dim, heads, dropout)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = ConvFeedForward(dim, mlp_mult, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def to_blocks(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B grid^2, C, H / grid, W / grid): the map cut into grid x grid blocks."""
    b, c, h, w = x.shape
    x = x.view(b, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * grid * grid, c, h // grid, w // grid)


def from_blocks(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`to_blocks`."""
    n, c, h, w = x.shape
    b = n // (grid * grid)
    x = x.view(b, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, grid * h, grid * w)


class Hierarchy(nn.Module):
    """Positional term, then ``depth`` transformer blocks inside each of grid x grid blocks of the map."""

    def __init__(self, dim: int, grid: int, block_side: int, depth: int, heads: int, mlp_mult: int,
                 dropout: float) -> None:
        super().__init__()
        self.grid = grid
        self.position = nn.Parameter(torch.randn(block_side, block_side))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_mult, dropout) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_blocks(x, self.grid) + self.position
        return from_blocks(self.blocks(x), self.grid)


def aggregation(dim_in: int, dim_out: int) -> nn.Sequential:
    """Between hierarchies: 3x3 convolution, channel LayerNorm, 3x3/2 max-pool (halves the map)."""
    return nn.Sequential(
        nn.Conv2d(dim_in, dim_out, 3, padding=1), ChannelLayerNorm(dim_out), nn.MaxPool2d(3, stride=2, padding=1),
    )


@register("htnet")
class HTNet(FlowInputModel):
    inputs = {"flow": ("strain", "v", "u"), "flow_landmarks": None}
    # The public script's recipe: Adam 5e-5, batch 256, 800 epochs, the last kept.
    recipe = Recipe(epochs=800, batch_size=256, lr=5e-5, optimizer="adam")
    #: On minmax255 caches the 0..255 values as they are, as the public script feeds them.
    minmax_modes = ("identity",)

    def __init__(
        self,
        n_classes: int = 3,
        patch_size: int = 7,
        dim: int = 256,
        heads: int = 3,
        block_repeats: Sequence[int] = (2, 2, 10),
        mlp_mult: int = 4,
        dropout: float = 0.0,
        normalise: str = "auto",
    ) -> None:
        """
        Args:
            n_classes: output classes.
            patch_size: side of a patch of the 28x28 tiled regions (7: a 4x4 map).
            dim, heads: channels and attention heads of the finest hierarchy
                (both double at each coarser one).
            block_repeats: transformer blocks per hierarchy, finest first; their
                number is the number of hierarchies.
            mlp_mult: hidden width of the MLP, in multiples of the channels.
            dropout: on attention weights and after projections.
            normalise: the flow's input normalisation (:mod:`fr_mer.models.flow_input`).
        """
        super().__init__()
        self.init_flow_input(normalise, 3)
        block_repeats = tuple(int(n) for n in block_repeats)
        levels = len(block_repeats)
        if FLOW_SIDE % patch_size:
            raise ParameterError(f"htnet: patch_size must divide {FLOW_SIDE}, got {patch_size}")
        side = FLOW_SIDE // patch_size
        grid = 2 ** (levels - 1)
        if levels < 1 or min(block_repeats) < 1 or side % grid:
            raise ParameterError(
                f"htnet: block_repeats {block_repeats} needs a map ({side}x{side} patches) that "
                f"{grid}x{grid} blocks divide, and at least one block per hierarchy"
            )
        if dim < 1 or heads < 1 or mlp_mult < 1 or not 0.0 <= dropout < 1.0:
            raise ParameterError("htnet: dim, heads, mlp_mult must be >= 1 and 0 <= dropout < 1")
        self.n_classes = n_classes
        self.patch_size = patch_size
        self.embed = nn.Conv2d(3 * patch_size ** 2, dim, 1)
        block_side = side // grid
        self.hierarchies = nn.ModuleList()
        self.aggregations = nn.ModuleList()
        for level, depth in enumerate(block_repeats):
            width = dim * 2 ** level
            self.hierarchies.append(Hierarchy(width, grid // 2 ** level, block_side, depth,
                                              heads * 2 ** level, mlp_mult, dropout))
            if level < levels - 1:
                self.aggregations.append(aggregation(width, 2 * width))
        last = dim * 2 ** (levels - 1)
        self.head_norm = ChannelLayerNorm(last)
        self.fc = nn.Linear(last, n_classes)

    def patches(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, 28, 28) -> (B, C p^2, 28 / p, 28 / p): each patch's pixels as channels."""
        p = self.patch_size
        return F.pixel_unshuffle(image, p)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flow = batch["flow"]
        if flow.shape[-2:] != (FLOW_SIDE, FLOW_SIDE):
            raise ParameterError(f"htnet reads {FLOW_SIDE}x{FLOW_SIDE} flow images, the cache holds "
                                 f"{tuple(flow.shape[-2:])}; preprocess with --feature-size {FLOW_SIDE}")
        regions = tile_regions(self.normalise_flow(flow), region_centres(batch["flow_landmarks"]))
        x = self.embed(self.patches(regions))
        for level, hierarchy in enumerate(self.hierarchies):
            x = hierarchy(x)
            if level < len(self.aggregations):
                x = self.aggregations[level](x)
        feature = self.head_norm(x).mean(dim=(2, 3))
        return {"logits": self.fc(feature), "feature": feature}
