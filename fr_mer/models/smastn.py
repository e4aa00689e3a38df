"""SMA-STN (Liu, Zheng, Zong; arXiv 2010.09342), reconstructed.

What the paper fixes: Dynamic Segmented Sparse Imaging (DSSI: dynamic images by
approximate rank pooling, a_t = 2t - T - 1, of each temporal segment as local
descriptors and of the whole clip as the global one, under a sparse sampling
protocol); a spatiotemporal movement-attending module (STMA: long-distance
spatial relations by non-local attention, and weights over the temporal
segments); a deviation enhancement loss (DE-Loss) on features.

fr-mer's reconstruction (docs/models.md says why):

- input ``dynamic_images`` (B, K + 1, S, S) from :func:`pipeline.temporal.dssi`
  (K segment images then the global one), resized to ``input_size``;
- a shared 2D CNN (the pre-activation ResNet-10 trunk of
  :mod:`fr_mer.models.micro_attention` without micro-attention, ``width``
  channels in its first stage) on each image, an input BatchNorm normalising
  the dynamic images' scale;
- STMA: an embedded-Gaussian non-local block (Wang et al., CVPR 2018) on each
  image's final feature map, which is kept at least
  :data:`NON_LOCAL_MIN_SIDE` x :data:`NON_LOCAL_MIN_SIDE` at every input size
  (:func:`trunk_strides` drops the strides of the last stages that would
  shrink it further: "long-distance" relations need distances to span),
  global average pooling to features f_1..f_K, f_g;
  segment weights ``softmax_k(v^T tanh(W f_k))``, attended local feature
  ``l = sum_k w_k f_k``; fused feature ``h = l + f_g`` (one feature space, so
  the DE-Loss compares like with like), linear classifier;
- DE-Loss: with a neutral feature ``n`` from the same CNN and non-local block,
  ``mean(relu(margin - ||h/|h| - n/|n| ||))``, added to cross-entropy with
  weight ``de_weight``. ``de_neutral="onset_face"``: ``n`` is the feature of
  the aligned onset face (column ``onset_face``, with its own input
  normalisation, since grey levels and dynamic images differ in scale);
  ``"static"``: ``n`` is the feature of the dynamic image of a motionless clip,
  which is all zeros.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.errors import ParameterError
from fr_mer.models._registry import register
from fr_mer.models.base import MERModel, Recipe
from fr_mer.models.micro_attention import ResNet10, resize_square

_NEUTRALS = ("onset_face", "static")

#: The smallest side of the map the non-local block attends over. On the 2x2
#: map of a stride-32 trunk at 64 px, every position is a neighbour of every
#: other and "long-distance relations" mean nothing; 7x7 is the map of a
#: ResNet at the paper's 224 px.
NON_LOCAL_MIN_SIDE = 7


def _halved(side: int) -> int:
    """Output side of a stride-2 layer with "same" padding (conv 3x3 pad 1, 7x7 pad 3, max-pool 3 pad 1)."""
    return (side + 1) // 2


def trunk_strides(input_size: int, min_side: int = NON_LOCAL_MIN_SIDE) -> tuple[int, int, int, int]:
    """Strides of the ResNet-10 trunk's four stages keeping its last map at least ``min_side`` wide.

    The stem (7x7/2 convolution, 3x3/2 max-pool) always halves twice; stage 1
    keeps its stride 1; each of stages 2-4 halves the map only while the result
    stays at least ``min_side`` (32 px: (1, 1, 1, 1), an 8x8 map; 64 px:
    (1, 2, 1, 1), 8x8; 112 px: (1, 2, 2, 1), 7x7; 224 px: (1, 2, 2, 2), 7x7).
    """
    side = _halved(_halved(input_size))
    strides = [1]
    for _ in range(3):
        if _halved(side) >= min_side:
            strides.append(2)
            side = _halved(side)
        else:
            strides.append(1)
    return tuple(strides)


def feature_map_side(input_size: int, strides: tuple[int, ...]) -> int:
    """Side of the trunk's last map for a square input of ``input_size`` and the stage ``strides``."""
    side = _halved(_halved(input_size))
    for stride in strides:
        side = _halved(side) if stride == 2 else side
    return side


class NonLocalBlock2d(nn.Module):
    """Embedded-Gaussian non-local block: (B, C, H, W) -> same shape.

    ``z = x + BN(W_z(softmax(theta(x)^T phi(x)) g(x)))`` over the H*W positions,
    with 1x1 convolutions to ``C // 2`` channels. The last BatchNorm starts at
    zero scale, so the block starts as the identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, N) with N = H * W: row i holds position i's weights over all positions."""
        query = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        key = self.phi(x).flatten(2)  # (B, C', N)
        return torch.softmax(query @ key, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        value = self.g(x).flatten(2).transpose(1, 2)  # (B, N, C')
        y = (self.attention(x) @ value).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.bn(self.out(y))


class SegmentAttention(nn.Module):
    """Softmax weights over K segment features: (B, K, D) -> (B, K), rows sum to 1."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.project = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.score(torch.tanh(self.project(features))).squeeze(-1), dim=1)


@register("smastn")
class SMASTN(MERModel):
    recorded_options = ("input_size",)
    inputs = {"dynamic_images": None, "onset_face": None}
    # The batch norms see the segment images, then the neutral image(s) appended: not sample-major rows.
    stack_masks_padding = False
    # Reconstruction: the spec gives no recipe; Adam with weight decay for a
    # small CNN trained from scratch, class-balanced batches for the composite.
    recipe = Recipe(
        epochs=40,
        batch_size=32,
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
        input_size: int = 64,
        width: int = 32,
        segment_hidden: int = 64,
        de_weight: float = 0.1,
        de_margin: float = 1.0,
        de_neutral: str = "onset_face",
        dropout: float = 0.5,
        mirror: float = 0.5,
    ) -> None:
        """
        Args:
            n_classes: output classes.
            input_size: image side; the same on every device (the paper: 112).
                The trunk's strides follow it (:func:`trunk_strides`), so the
                non-local block always sees a map of at least 7x7.
            width: channels of the shared CNN's first stage (doubling per stage).
            segment_hidden: hidden width of the segment-weight scorer.
            de_weight: weight of the DE-Loss (0: plain cross-entropy).
            de_margin: distance between unit-length features below which the
                DE-Loss pushes (0..2; 1 = cosine similarity 0.5).
            de_neutral: "onset_face" or "static" (see the module docstring).
            dropout: before the classifier.
            mirror: probability of mirroring a sample (all its images) in training.
        """
        super().__init__()
        if de_neutral not in _NEUTRALS:
            raise ParameterError(f"de_neutral must be one of {', '.join(_NEUTRALS)}, got {de_neutral!r}")
        if input_size < 32:
            raise ParameterError(f"input_size must be >= 32, got {input_size}")
        if not 0.0 <= de_margin <= 2.0:
            raise ParameterError(f"de_margin must be in [0, 2] (distance of unit vectors), got {de_margin}")
        self.n_classes = n_classes
        self.input_size = input_size
        self.de_weight = de_weight
        self.de_margin = de_margin
        self.de_neutral = de_neutral
        self.mirror = mirror
        # Inputs this instance reads (the class lists every column it may read).
        self.inputs = {"dynamic_images": None}
        if de_weight > 0 and de_neutral == "onset_face":
            self.inputs["onset_face"] = None
        self.cnn = ResNet10(width=width, attention=False, stage_strides=trunk_strides(input_size))
        # Grey levels of the onset face are on another scale than dynamic images.
        self.onset_bn = nn.BatchNorm2d(1)
        dim = self.cnn.out_channels
        self.non_local = NonLocalBlock2d(dim)
        self.segment_attention = SegmentAttention(dim, segment_hidden)
        if not 0.0 <= dropout < 1.0:
            raise ParameterError(f"smastn needs 0 <= dropout < 1, got {dropout}")
        self.dropout = dropout
        self.fc = nn.Linear(dim, n_classes)

    def _features(self, normalised: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) normalised images -> (N, D): trunk, non-local block, pool."""
        return F.adaptive_avg_pool2d(self.non_local(self.cnn.forward_normalised(normalised)), 1).flatten(1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["dynamic_images"]
        b, k1 = images.shape[:2]
        if images.dim() != 4 or k1 < 2:
            raise ValueError(
                "dynamic_images must be (B, K + 1, S, S) with K >= 1 segment images and the "
                f"global one, got shape {tuple(images.shape)}"
            )
        size = self.input_size
        flat = resize_square(images.reshape(b * k1, 1, *images.shape[-2:]), size)
        neutral = self.training and self.de_weight > 0
        # The neutral images share the batch with the dynamic images, so every
        # BatchNorm sees in training the mixture whose running statistics it keeps.
        if neutral and self.de_neutral == "static":
            # A motionless clip's dynamic image is zero everywhere.
            flat = torch.cat([flat, flat.new_zeros(1, *flat.shape[1:])])
        normalised = self.cnn.input_bn(flat)
        if neutral and self.de_neutral == "onset_face":
            if "onset_face" not in batch:
                raise ValueError(
                    "smastn with de_neutral='onset_face' needs the onset_face column; "
                    "preprocess with it, or set de_neutral='static' or de_weight=0"
                )
            onset = resize_square(batch["onset_face"].unsqueeze(1), size)
            normalised = torch.cat([normalised, self.onset_bn(onset)])
        features = self._features(normalised)
        per_image = features[: b * k1].reshape(b, k1, -1)
        segments, global_feature = per_image[:, :-1], per_image[:, -1]
        weights = self.segment_attention(segments)
        local = (weights.unsqueeze(-1) * segments).sum(dim=1)
        fused = local + global_feature
        outputs = {
            "logits": self.fc(self.drop(fused, self.dropout)),
            "feature": fused,
            "segment_weights": weights,
        }
        if neutral:
            outputs["neutral_feature"] = features[b * k1:].expand(b, -1)
        return outputs

    def de_loss(self, feature: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
        """Hinge on the distance of unit-length features: mean(relu(margin - d))."""
        distance = (F.normalize(feature, dim=1) - F.normalize(neutral, dim=1)).norm(dim=1)
        return F.relu(self.de_margin - distance).mean()

    def loss(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        total = F.cross_entropy(outputs["logits"], target)
        if self.de_weight > 0 and "neutral_feature" in outputs:
            total = total + self.de_weight * self.de_loss(outputs["feature"], outputs["neutral_feature"])
        return total

    def augment(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        # Dynamic images ignore brightness shifts (the weights sum to zero), so mirroring is the augmentation.
        if self.mirror <= 0:
            return batch
        b = batch["dynamic_images"].shape[0]
        flip = torch.rand(b, generator=generator, device=generator.device) < self.mirror
        out = dict(batch)
        for name in ("dynamic_images", "onset_face"):
            if name in batch:
                x = batch[name]
                mask = flip.to(x.device).view(b, *([1] * (x.dim() - 1)))
                out[name] = torch.where(mask, x.flip(-1), x)
        return out
