"""MERANet (Gajjala, Reddy, Mukherjee, Dubey; arXiv 2012.04581), reconstructed.

What the paper fixes: a 3D residual network over the micro-expression clip,
with channel attention and spatio-temporal attention re-calibrating the
features inside each residual module; 3D kernels see space and time together.

fr-mer's reconstruction (docs/models.md says why): a 3D ResNet-18-style network
(Hara et al.'s R3D layout, ``layers`` blocks per stage) over the aligned clip
``clip_frames`` (B, T, S, S), grey levels 0..255, resampled inside the model to
``clip_length`` frames of ``input_size`` pixels and, by default
(``clip_input="onset_difference"``), taken as each frame's change from the onset
frame (docs/models.md says why: on grey levels the network learns the subjects'
faces, not their motion); every basic block applies
CBAM-style attention (Woo et al., ECCV 2018, in 3D) to its residual branch
before the addition:

- channel attention ``sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))``, (B, C, 1, 1, 1),
  the MLP shared, hidden width ``max(C // reduction, 4)``;
- spatio-temporal attention ``sigmoid(BN(conv3d([mean_c F; max_c F])))``,
  (B, 1, T, H, W), kernel ``spatial_kernel``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.models.base import MERModel, Recipe
from fr_mer.models.micro_attention import random_affine, random_intensity_shift

#: What the network sees of the clip: each frame minus the onset frame (the default), or the grey levels.
CLIP_INPUTS = ("onset_difference", "grey_levels")


class ChannelAttention3d(nn.Module):
    """(B, C, T, H, W) -> (B, C, 1, 1, 1) weights in (0, 1)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(
            nn.Conv3d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = F.adaptive_avg_pool3d(x, 1)
        peak = F.adaptive_max_pool3d(x, 1)
        return torch.sigmoid(self.mlp(avg) + self.mlp(peak))


class SpatioTemporalAttention3d(nn.Module):
    """(B, C, T, H, W) -> (B, 1, T, H, W) weights in (0, 1)."""

    def __init__(self, kernel: Sequence[int] = (3, 7, 7)) -> None:
        super().__init__()
        kernel = tuple(int(k) for k in kernel)
        if len(kernel) != 3 or any(k % 2 == 0 for k in kernel):
            raise ParameterError(f"spatial_kernel must be three odd sizes (t, h, w), got {kernel}")
        self.conv = nn.Conv3d(2, 1, kernel_size=kernel, padding=tuple(k // 2 for k in kernel), bias=False)
        self.bn = nn.BatchNorm3d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class AttentionBlock3d(nn.Module):
    """3D basic block: conv-BN-ReLU-conv-BN, channel then spatio-temporal
    attention on that residual branch, plus the shortcut, ReLU.

    (B, C_in, T, H, W) -> (B, C_out, ceil(T / s), ceil(H / s), ceil(W / s)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        reduction: int = 16,
        spatial_kernel: Sequence[int] = (3, 7, 7),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.channel_attention = ChannelAttention3d(out_channels, reduction)
        self.spatiotemporal_attention = SpatioTemporalAttention3d(spatial_kernel)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self.bn1(self.conv1(x)))
        branch = self.bn2(self.conv2(branch))
        branch = branch * self.channel_attention(branch)
        branch = branch * self.spatiotemporal_attention(branch)
        return F.relu(branch + self.shortcut(x))


@register("meranet")
class MERANet(MERModel):
    recorded_options = ("input_size", "clip_input")
    # Checkpoints written before clip_input existed were trained on the grey levels.
    options_before_added = {"clip_input": "grey_levels"}
    inputs = {"clip_frames": None}
    # Reconstruction: the paper's recipe is not given in the spec; Adam with
    # weight decay and a step decay is the usual recipe for a 3D ResNet
    # trained from scratch on a few hundred clips.
    recipe = Recipe(
        epochs=40,
        batch_size=16,
        lr=1e-3,
        optimizer="adam",
        weight_decay=1e-4,
        lr_step_epochs=20,
        lr_gamma=0.1,
        class_balanced=True,
        augment=True,
    )

    def __init__(
        self,
        n_classes: int = 3,
        base_width: int = 16,
        layers: Sequence[int] = (2, 2, 2, 2),
        clip_length: int | None = None,
        input_size: int = 56,
        reduction: int = 16,
        spatial_kernel: Sequence[int] = (3, 7, 7),
        dropout: float = 0.5,
        mirror: float = 0.5,
        crop_fraction: float = 0.9,
        intensity_shift: float = 10.0,
        clip_input: str = "onset_difference",
    ) -> None:
        """
        Args:
            n_classes: output classes.
            base_width: channels of the first stage (doubling per stage);
                16 keeps a CPU run practical, 64 is R3D-18's width.
            layers: blocks per stage (2, 2, 2, 2) = ResNet-18 layout;
                (1, 1, 1, 1) = ResNet-10.
            clip_length: frames the clip is resampled to (linear in time,
                endpoints kept); None: as stored in the cache.
            input_size: frame side; the same on every device (the paper: 112).
            reduction: channel-attention MLP reduction (CBAM: 16).
            spatial_kernel: spatio-temporal attention kernel (t, h, w).
            dropout: before the classifier.
            mirror, crop_fraction, intensity_shift: training augmentation
                (one transform per clip, the same for all its frames).
            clip_input: "onset_difference" (each frame minus the onset frame:
                the motion, with the face's identity taken out) or
                "grey_levels" (the frames as stored; the network learned the
                training subjects' faces and not their motion, docs/models.md).
        """
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ParameterError(f"layers must be four block counts >= 1, got {layers}")
        if clip_length is not None and clip_length < 1:
            raise ParameterError(f"clip_length must be >= 1, got {clip_length}")
        if input_size < 16:
            raise ParameterError(f"input_size must be >= 16, got {input_size}")
        if clip_input not in CLIP_INPUTS:
            raise ParameterError(f"meranet option clip_input must be one of {', '.join(CLIP_INPUTS)}, "
                                 f"got {clip_input!r}")
        self.clip_input = clip_input
        self.n_classes = n_classes
        self.clip_length = clip_length
        self.input_size = input_size
        self.mirror = mirror
        self.crop_fraction = crop_fraction
        self.intensity_shift = intensity_shift
        self.input_bn = nn.BatchNorm3d(1)
        self.stem = nn.Sequential(
            nn.Conv3d(1, base_width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(base_width),
            nn.ReLU(inplace=True),
            # Time is left whole here: clips are short (8-16 frames).
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        stages = []
        previous = base_width
        for i, count in enumerate(layers):
            channels = base_width * 2**i
            blocks = [
                AttentionBlock3d(
                    previous if j == 0 else channels,
                    channels,
                    stride=2 if (i > 0 and j == 0) else 1,
                    reduction=reduction,
                    spatial_kernel=spatial_kernel,
                )
                for j in range(count)
            ]
            stages.append(nn.Sequential(*blocks))
            previous = channels
        self.stages = nn.Sequential(*stages)
        if not 0.0 <= dropout < 1.0:
            raise ParameterError(f"meranet needs 0 <= dropout < 1, got {dropout}")
        self.dropout = dropout
        self.fc = nn.Linear(previous, n_classes)

    def prepare(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, T, S, S) grey levels -> (B, 1, clip_length, size, size)."""
        b, t, h, w = clip.shape
        x = clip.unsqueeze(1)
        if self.clip_length is not None and self.clip_length != t:
            # align_corners keeps the onset and offset frames, as pipeline.temporal.resample_clip does.
            x = F.interpolate(x, size=(self.clip_length, h, w), mode="trilinear", align_corners=True)
            t = self.clip_length
        size = self.input_size
        if (h, w) != (size, size):
            frames = x.reshape(b * t, 1, h, w)
            frames = F.interpolate(
                frames, size=(size, size), mode="bilinear", align_corners=False, antialias=max(h, w) > size
            )
            x = frames.reshape(b, 1, t, size, size)
        return x

    def network_input(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, T, S, S) grey levels -> (B, 1, clip_length, size, size) as the network sees them:
        :meth:`prepare`'s frames, minus the onset frame with ``clip_input="onset_difference"``."""
        x = self.prepare(clip)
        if self.clip_input == "onset_difference":
            # The onset frame is the subject's neutral face: what is left is the movement.
            x = x - x[:, :, :1]
        return x

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.stem(self.input_bn(self.network_input(batch["clip_frames"])))
        x = self.stages(x)
        feature = F.adaptive_avg_pool3d(x, 1).flatten(1)
        return {"logits": self.fc(self.drop(feature, self.dropout)), "feature": feature}

    def augment(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        clip = random_affine(
            batch["clip_frames"], generator, mirror=self.mirror, crop_fraction=self.crop_fraction
        )
        if self.intensity_shift > 0:
            clip = random_intensity_shift(clip, generator, self.intensity_shift)
        return {**batch, "clip_frames": clip}
