"""Micro-attention (Wang, Peng, Bi, Chen; arXiv 1811.02360, Neurocomputing 2020).

Input: the aligned grayscale apex face, cache column ``apex_face`` (B, S, S),
grey levels 0..255; the model resizes it to ``input_size`` (the paper: 224).

Network (the paper's ResNet-10): input BatchNorm (which also normalises the
0..255 grey levels), 7x7/2 convolution to 64 channels, BN, ReLU, 3x3/2
max-pool; four stages of 64/128/256/512 channels with one pre-activation basic
block each (BN-ReLU-3x3 conv, BN-ReLU-3x3 conv), stride 2 and a 1x1/2
projection shortcut in stages 2-4; final BN + ReLU, global average pool,
L2-normalised feature (the paper's composite-database setting), linear
classifier.

Micro-attention unit, in every block: with ``T`` the residual sum
(shortcut + conv2 output),
``M = sigmoid(conv1x1_{C->1}(conv1x1_{3C->C}(concat[shortcut, conv1_out, conv2_out])))``
(both convolutions bias-free, ``M`` of shape (B, 1, H, W) broadcast over the
channels) and the block returns ``(1 + M) * T``.

Reconstructed details (docs/models.md): the projection shortcut takes the
pre-activated input (as in He et al.'s pre-activation ResNet); the L2-normalised
feature is multiplied by a fixed scale (``feature_scale``) before the
classifier, because softmax on unit-length features cannot become confident
(NormFace, Wang et al. 2017) and the paper gives no scale; no pretrained
weights are downloaded: training starts from scratch unless
``backbone_checkpoint`` names a state dict of the user's.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.state_dicts import CheckpointError, read_state_dict
from fr_mer.models.base import MERModel, Recipe


# The paper's recipe is in iterations (2,500 of batch 16, lr x0.1 every 500).
# In epochs of the composite protocol's training fold (442 samples less one
# subject's, about 436; an epoch of class-balanced sampling draws as many):
# 28 iterations per epoch -> 2,500 / 28 = 89 epochs, 500 / 28 = 18 epochs.
_COMPOSITE_TRAIN_SAMPLES = 436
_ITERATIONS_PER_EPOCH = math.ceil(_COMPOSITE_TRAIN_SAMPLES / 16)
_PAPER_RECIPE = Recipe(
    epochs=round(2500 / _ITERATIONS_PER_EPOCH),
    batch_size=16,
    lr=0.01,
    optimizer="sgd",
    momentum=0.9,
    weight_decay=5e-6,
    lr_step_epochs=round(500 / _ITERATIONS_PER_EPOCH),
    lr_gamma=0.1,
    class_balanced=True,
    augment=True,
)


class MicroAttentionUnit(nn.Module):
    """The attention map of one block: (B, 1, H, W) in (0, 1).

    ``3 C^2 + C`` parameters: a bias-free 1x1 convolution 3C -> C over the
    concatenated shortcut, conv1 and conv2 outputs, then a bias-free 1x1
    convolution C -> 1, then a sigmoid.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(3 * channels, channels, kernel_size=1, bias=False)
        self.score = nn.Conv2d(channels, 1, kernel_size=1, bias=False)

    def forward(self, shortcut: torch.Tensor, conv1_out: torch.Tensor, conv2_out: torch.Tensor) -> torch.Tensor:
        stacked = torch.cat([shortcut, conv1_out, conv2_out], dim=1)
        return torch.sigmoid(self.score(self.reduce(stacked)))


class PreActBlock(nn.Module):
    """Pre-activation basic block, optionally with the micro-attention unit.

    (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, attention: bool = True) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.attention = MicroAttentionUnit(out_channels) if attention else None

    def forward(self, x: torch.Tensor, return_map: bool = False):
        pre = F.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(pre)
        conv1_out = self.conv1(pre)
        conv2_out = self.conv2(F.relu(self.bn2(conv1_out)))
        total = shortcut + conv2_out
        attention_map = None
        if self.attention is not None:
            attention_map = self.attention(shortcut, conv1_out, conv2_out)
            total = (1.0 + attention_map) * total
        return (total, attention_map) if return_map else total


class ResNet10(nn.Module):
    """Pre-activation ResNet-10 trunk for grayscale images.

    (B, 1, H, W), any scale (the input BatchNorm normalises it) ->
    (B, 8 * width, H / R, W / R) after the final BN + ReLU, with R = 4 times the
    product of ``stage_strides`` (32 for the paper's (1, 2, 2, 2)).
    """

    def __init__(self, width: int = 64, attention: bool = True, in_channels: int = 1,
                 stage_strides: tuple[int, int, int, int] = (1, 2, 2, 2)) -> None:
        super().__init__()
        if len(stage_strides) != 4 or any(s not in (1, 2) for s in stage_strides):
            raise ParameterError(f"stage_strides must be four strides of 1 or 2, got {stage_strides}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.input_bn = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks = []
        previous = width
        for i, channels in enumerate(widths):
            blocks.append(PreActBlock(previous, channels, stride=stage_strides[i], attention=attention))
            previous = channels
        self.blocks = nn.ModuleList(blocks)
        self.final_bn = nn.BatchNorm2d(previous)
        self.out_channels = previous

    def forward(self, x: torch.Tensor, return_maps: bool = False):
        return self.forward_normalised(self.input_bn(x), return_maps=return_maps)

    def forward_normalised(self, x: torch.Tensor, return_maps: bool = False):
        """The trunk after the input BatchNorm, for inputs normalised otherwise."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        maps = []
        for block in self.blocks:
            x, attention_map = block(x, return_map=True)
            maps.append(attention_map)
        x = F.relu(self.final_bn(x))
        return (x, maps) if return_maps else x


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear, antialiased when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    mirror: float = 0.0,
    rotation: float = 0.0,
    crop_fraction: float = 1.0,
) -> torch.Tensor:
    """One random similarity transform per sample, same for all its channels.

    ``x`` (B, C, H, W) (channels may be frames of a clip). Each sample is
    mirrored left-right with probability ``mirror``, rotated by a uniform angle
    in +-``rotation`` degrees, and cropped to a window of ``crop_fraction`` of
    its side at a uniform position, resampled to the input size (bilinear,
    border pixels repeated). Random numbers come from ``generator``.
    """
    b = x.shape[0]
    draws = torch.rand(b, 4, generator=generator, device=generator.device).to(x.device, torch.float32)
    flip = torch.where(draws[:, 0] < mirror, -1.0, 1.0)
    angle = (2.0 * draws[:, 1] - 1.0) * math.radians(rotation)
    slack = 1.0 - crop_fraction
    shift_x = (2.0 * draws[:, 2] - 1.0) * slack
    shift_y = (2.0 * draws[:, 3] - 1.0) * slack
    cos, sin = torch.cos(angle) * crop_fraction, torch.sin(angle) * crop_fraction
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift_x], dim=1),
            torch.stack([sin * flip, cos, shift_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_intensity_shift(x: torch.Tensor, generator: torch.Generator, shift: float) -> torch.Tensor:
    """Add one uniform grey-level offset in +-``shift`` per sample; clip to 0..255."""
    b = x.shape[0]
    offset = (2.0 * torch.rand(b, generator=generator, device=generator.device) - 1.0) * shift
    offset = offset.to(x.device, x.dtype).view(b, *([1] * (x.dim() - 1)))
    return (x + offset).clamp(0.0, 255.0)


@register("micro_attention")
class MicroAttentionNet(MERModel):
    inputs = {"apex_face": None}
    recipe = _PAPER_RECIPE
    recorded_options = ("input_size",)

    def __init__(
        self,
        n_classes: int = 3,
        input_size: int = 112,
        width: int = 64,
        attention: bool = True,
        l2_normalise: bool = True,
        feature_scale: float = 16.0,
        mirror: float = 0.5,
        rotation: float = 5.0,
        intensity_shift: float = 10.0,
        crop_fraction: float = 224 / 240,
        backbone_checkpoint: str | None = None,
    ) -> None:
        """
        Args:
            n_classes: output classes (3 in the composite protocol).
            input_size: side the apex face is resized to (the paper: 224; the
                default 112 is a quarter of the work). The same on every device.
            width: channels of the first stage (the paper: 64; stages double it).
            attention: the micro-attention unit in every block (False: plain
                pre-activation ResNet-10, the ablation).
            l2_normalise: L2-normalise the pooled feature (the paper's
                composite setting); ``feature_scale`` multiplies it.
            mirror, rotation, intensity_shift, crop_fraction: training
                augmentation: mirror probability, rotation range (degrees),
                grey-level shift range, and the random crop's side as a fraction
                of the image (224 of 240 in the paper).
            backbone_checkpoint: a state dict file (fr-mer key names) to start
                from; every tensor whose name and shape match is loaded except
                the classifier. Nothing is downloaded.
        """
        super().__init__()
        if input_size < 32:
            raise ParameterError(f"input_size must be >= 32 (five stride-2 stages), got {input_size}")
        if not 0.0 < crop_fraction <= 1.0:
            raise ParameterError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.n_classes = n_classes
        self.input_size = input_size
        self.l2_normalise = l2_normalise
        self.feature_scale = feature_scale
        self.mirror = mirror
        self.rotation = rotation
        self.intensity_shift = intensity_shift
        self.crop_fraction = crop_fraction
        self.backbone = ResNet10(width=width, attention=attention)
        self.fc = nn.Linear(self.backbone.out_channels, n_classes)
        self.loaded_from_checkpoint: list[str] = []
        if backbone_checkpoint is not None:
            self.load_backbone(backbone_checkpoint)

    def options(self) -> dict[str, object]:
        # The trained weights supersede the starting checkpoint: rebuilding a
        # trained model must not need (or reload) that file.
        options = super().options()
        options.pop("backbone_checkpoint", None)
        return options

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["apex_face"].unsqueeze(1)
        x = resize_square(x, self.input_size)
        feature = F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)
        if self.l2_normalise:
            feature = F.normalize(feature, dim=1) * self.feature_scale
        return {"logits": self.fc(feature), "feature": feature}

    def attention_maps(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The four blocks' maps M, each (B, 1, H_i, W_i), for visualisation."""
        x = resize_square(batch["apex_face"].unsqueeze(1), self.input_size)
        return self.backbone(x, return_maps=True)[1]

    def augment(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch["apex_face"].unsqueeze(1)
        x = random_affine(
            x, generator, mirror=self.mirror, rotation=self.rotation, crop_fraction=self.crop_fraction
        )
        if self.intensity_shift > 0:
            x = random_intensity_shift(x, generator, self.intensity_shift)
        return {**batch, "apex_face": x.squeeze(1)}

    def attention_parameter_count(self) -> int:
        """Parameters of the micro-attention units (sum over blocks of 3 C^2 + C)."""
        return sum(
            p.numel()
            for block in self.backbone.blocks
            if block.attention is not None
            for p in block.attention.parameters()
        )

    def load_backbone(self, path: str | Path) -> list[str]:
        """Load the matching tensors of a state dict file, all but the classifier.

        Returns the names loaded. Raises CheckpointError naming the file when nothing
        matches or a matching name has another shape (another width).
        """
        state = read_state_dict(path)
        own = self.state_dict()
        wanted = {k: v for k, v in state.items() if k in own and not k.startswith("fc.")}
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in wanted.items() if v.shape != own[k].shape]
        if wrong:
            raise CheckpointError(
                f"{path}: tensors of other shapes ({'; '.join(wrong[:3])}); "
                "build the model with the checkpoint's width"
            )
        if not wanted:
            example = next(iter(own))
            raise CheckpointError(
                f"{path}: no tensor name matches this network (expected names like {example!r}); "
                "rename the checkpoint's keys to fr-mer's (docs/models.md, Micro-attention)"
            )
        self.load_state_dict(wanted, strict=False)
        self.loaded_from_checkpoint = sorted(wanted)
        return self.loaded_from_checkpoint
