"""Micro-attention, MERANet and SMA-STN: building blocks against hand computations,
overfitting a handful of samples, and inputs read from a cache."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fr_mer.models import count_parameters, create_model, model_class
from fr_mer.models.meranet import AttentionBlock3d, ChannelAttention3d, SpatioTemporalAttention3d
from fr_mer.models.micro_attention import PreActBlock, random_affine
from fr_mer.models.smastn import NonLocalBlock2d
from fr_mer.pipeline.cache import ArraySpec, CacheWriter, read_cache
from fr_mer.pipeline.temporal import dssi, resample_clip

# Tiny configurations: every test runs in seconds on one core.
TINY = {
    "micro_attention": {"width": 8, "input_size": 32},
    "meranet": {"base_width": 4, "layers": (1, 1, 1, 1), "input_size": 16},
    "smastn": {"width": 4, "input_size": 32, "segment_hidden": 8},
}
FACE, CLIP_T, CLIP_S, K, DI_S = 32, 4, 16, 2, 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def identity_bn(*bns):
    """BatchNorms in eval mode computing exactly the identity."""
    for bn in bns:
        bn.eval()
        bn.eps = 0.0
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.weight.data.fill_(1.0)
        bn.bias.data.zero_()


# -- Micro-attention -------------------------------------------------------------
def test_micro_attention_block_matches_numpy():
    torch.manual_seed(0)
    c = 2
    block = PreActBlock(c, c, stride=1, attention=True)
    identity_bn(block.bn1, block.bn2)
    # 3x3 kernels with only the centre tap: each convolution is a channel mix.
    w1 = np.array([[1.0, -0.5], [0.25, 2.0]])
    w2 = np.array([[-1.0, 0.5], [1.5, 0.75]])
    wr = np.array([[0.5, -1.0, 0.25, 1.0, -0.5, 0.3], [0.2, 0.1, -0.4, 0.6, 0.9, -0.7]])  # 3C -> C
    ws = np.array([[0.8, -1.2]])  # C -> 1
    with torch.no_grad():
        for conv, w in ((block.conv1, w1), (block.conv2, w2)):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = torch.tensor(w, dtype=torch.float32)
        block.attention.reduce.weight.copy_(torch.tensor(wr, dtype=torch.float32)[:, :, None, None])
        block.attention.score.weight.copy_(torch.tensor(ws, dtype=torch.float32)[:, :, None, None])
    x = np.random.default_rng(0).normal(size=(1, c, 3, 3))
    out, attention_map = block(torch.tensor(x, dtype=torch.float32), return_map=True)

    mix = lambda w, a: np.einsum("oi,bihw->bohw", w, a)  # noqa: E731
    shortcut = x  # identity shortcut: same width, stride 1
    conv1_out = mix(w1, np.maximum(x, 0))
    conv2_out = mix(w2, np.maximum(conv1_out, 0))
    total = shortcut + conv2_out
    m = sigmoid(mix(ws, mix(wr, np.concatenate([shortcut, conv1_out, conv2_out], axis=1))))
    assert attention_map.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(attention_map.detach().numpy(), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.detach().numpy(), (1.0 + m) * total, rtol=1e-5, atol=1e-5)
    # Without the unit, the block returns T itself.
    block.attention = None
    np.testing.assert_allclose(block(torch.tensor(x, dtype=torch.float32)).detach().numpy(), total,
                               rtol=1e-5, atol=1e-5)


def test_micro_attention_projection_block_shapes():
    block = PreActBlock(4, 8, stride=2)
    out, m = block(torch.randn(2, 4, 9, 9), return_map=True)
    assert out.shape == (2, 8, 5, 5) and m.shape == (2, 1, 5, 5)
    assert bool(((m > 0) & (m < 1)).all())


def test_micro_attention_extra_parameters():
    model = create_model("micro_attention")
    plain = create_model("micro_attention", attention=False)
    expected = sum(3 * ch * ch + ch for ch in (64, 128, 256, 512))  # bias-free 3C->C and C->1
    assert model.attention_parameter_count() == expected == 1_045_440
    assert count_parameters(model) - count_parameters(plain) == expected
    # As specified (a 3C -> C reduction), the units add about a fifth of the backbone.
    assert expected / count_parameters(plain) < 0.25


def test_micro_attention_input_size_is_an_option_not_a_device_choice():
    model = create_model("micro_attention")
    # The size is fixed when the model is built: the same network on every device (issue 11, item 8).
    assert model.input_size == 112
    assert create_model("micro_attention", input_size=224).input_size == 224
    # A checkpoint records the size the model ran at, so it rebuilds the same on any device.
    assert model.options()["input_size"] == 112
    assert create_model("smastn").options() == {"input_size": 64}
    assert model.recipe.optimizer == "sgd" and model.recipe.lr == 0.01 and model.recipe.batch_size == 16
    assert model.recipe.class_balanced and model.recipe.augment
    # 2,500 iterations, lr x0.1 every 500, in epochs of a composite training fold (~436 samples).
    iterations_per_epoch = math.ceil(436 / 16)
    assert abs(model.recipe.epochs * iterations_per_epoch - 2500) < iterations_per_epoch
    assert abs(model.recipe.lr_step_epochs * iterations_per_epoch - 500) < iterations_per_epoch


def test_augmentation_is_exact_for_a_plain_mirror_and_reproducible():
    x = torch.rand(3, 2, 8, 8) * 255
    g = torch.Generator().manual_seed(0)
    np.testing.assert_allclose(random_affine(x, g, mirror=1.0), x.flip(-1), atol=1e-3)
    np.testing.assert_allclose(random_affine(x, g, mirror=0.0), x, atol=1e-3)
    model = create_model("micro_attention", **TINY["micro_attention"])
    batch = {"apex_face": torch.rand(4, FACE, FACE) * 255, "other": torch.arange(4)}
    a = model.augment(batch, torch.Generator().manual_seed(3))
    b = model.augment(batch, torch.Generator().manual_seed(3))
    assert a["apex_face"].shape == batch["apex_face"].shape and a["other"] is batch["other"]
    torch.testing.assert_close(a["apex_face"], b["apex_face"])
    assert float(a["apex_face"].min()) >= 0 and float(a["apex_face"].max()) <= 255
    shift_only = create_model("micro_attention", mirror=0.0, rotation=0.0, crop_fraction=1.0, **TINY["micro_attention"])
    shifted = shift_only.augment({"apex_face": torch.full((5, 4, 4), 100.0)}, torch.Generator().manual_seed(1))
    offsets = shifted["apex_face"] - 100.0
    assert float(offsets.abs().max()) <= 10.0 + 1e-4
    torch.testing.assert_close(offsets, offsets[:, :1, :1].expand_as(offsets))  # one shift per image


def test_micro_attention_backbone_checkpoint(tmp_path):
    source = create_model("micro_attention", **TINY["micro_attention"], n_classes=5)
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    model = create_model("micro_attention", **TINY["micro_attention"], backbone_checkpoint=str(path))
    for name, value in source.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], value)
    assert not any(k.startswith("fc.") for k in model.loaded_from_checkpoint)
    assert model.fc.out_features == 3
    assert "backbone_checkpoint" not in model.options()  # the trained weights supersede it
    with pytest.raises(ValueError, match="other shapes"):
        create_model("micro_attention", width=16, input_size=32, backbone_checkpoint=str(path))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="no tensor name matches"):
        create_model("micro_attention", backbone_checkpoint=str(tmp_path / "foreign.pt"))
    with pytest.raises(ValueError, match="no such checkpoint"):
        create_model("micro_attention", backbone_checkpoint=str(tmp_path / "missing.pt"))


# -- MERANet -----------------------------------------------------------------------
def test_meranet_attention_maps_match_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 5, 5)
    channel = ChannelAttention3d(8, reduction=2)
    first, second = channel.mlp[0], channel.mlp[2]

    def mlp(v):
        hidden = F.relu(F.linear(v, first.weight.flatten(1), first.bias))
        return F.linear(hidden, second.weight.flatten(1), second.bias)

    expected = torch.sigmoid(mlp(x.mean(dim=(2, 3, 4))) + mlp(x.amax(dim=(2, 3, 4))))
    got = channel(x)
    assert got.shape == (2, 8, 1, 1, 1)
    torch.testing.assert_close(got.flatten(1), expected)

    spatial = SpatioTemporalAttention3d((3, 5, 5))
    identity_bn(spatial.bn)
    got = spatial(x)
    assert got.shape == (2, 1, 3, 5, 5)
    pooled = torch.stack([x.mean(1), x.amax(1)], dim=1)
    torch.testing.assert_close(got, torch.sigmoid(F.conv3d(pooled, spatial.conv.weight, padding=(1, 2, 2))))


def test_meranet_block_applies_attention_to_the_residual_branch():
    torch.manual_seed(1)
    block = AttentionBlock3d(4, 8, stride=2, reduction=4).eval()
    x = torch.randn(2, 4, 4, 6, 6)
    out = block(x)
    assert out.shape == (2, 8, 2, 3, 3)
    branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    ca = block.channel_attention(branch)
    assert ca.shape == (2, 8, 1, 1, 1)
    branch = branch * ca
    sa = block.spatiotemporal_attention(branch)
    assert sa.shape == (2, 1, 2, 3, 3)
    torch.testing.assert_close(out, F.relu(branch * sa + block.shortcut(x)))


def test_meranet_resamples_clip_inside():
    model = create_model("meranet", clip_length=6, **TINY["meranet"]).eval()
    clip = torch.linspace(0, 255, 9).view(1, 9, 1, 1).expand(2, 9, 20, 20)
    prepared = model.prepare(clip)
    assert prepared.shape == (2, 1, 6, 16, 16)
    torch.testing.assert_close(prepared[0, 0, :, 0, 0], torch.linspace(0, 255, 6))  # endpoints kept, linear
    assert model(({"clip_frames": clip}))["logits"].shape == (2, 3)
    assert create_model("meranet").input_size == 56


# -- SMA-STN -----------------------------------------------------------------------
def test_non_local_block_shapes_and_identity_start():
    block = NonLocalBlock2d(6).eval()
    x = torch.randn(2, 6, 4, 5)
    attention = block.attention(x)
    assert attention.shape == (2, 20, 20)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 20))
    torch.testing.assert_close(block(x), x)  # zero-initialised output BN
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
    assert block(x).shape == x.shape and not torch.allclose(block(x), x)


def test_smastn_segment_weights_and_de_loss():
    torch.manual_seed(0)
    model = create_model("smastn", **TINY["smastn"])
    batch = {
        "dynamic_images": torch.randn(3, K + 1, DI_S, DI_S) * 10,
        "onset_face": torch.rand(3, FACE, FACE) * 255,
    }
    out = model(batch)
    assert out["segment_weights"].shape == (3, K)
    torch.testing.assert_close(out["segment_weights"].sum(1), torch.ones(3))
    assert out["neutral_feature"].shape == out["feature"].shape
    target = torch.tensor([0, 1, 2])
    expected = F.cross_entropy(out["logits"], target) + 0.1 * model.de_loss(out["feature"], out["neutral_feature"])
    torch.testing.assert_close(model.loss(out, target), expected)
    # DE-Loss by hand: margin 1 on the distance of unit vectors.
    e1, e2 = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 0.5]])
    assert float(model.de_loss(e1, e2)) == 0.0  # distance sqrt(2) > 1
    assert float(model.de_loss(e1, 2 * e1)) == pytest.approx(1.0)  # same direction: distance 0
    tilted = torch.tensor([[np.cos(np.pi / 6), np.sin(np.pi / 6)]])  # 30 degrees: d = 2 sin(15 deg)
    assert float(model.de_loss(e1, tilted)) == pytest.approx(1.0 - 2 * np.sin(np.pi / 12), rel=1e-5)
    model.eval()
    assert "neutral_feature" not in model({"dynamic_images": batch["dynamic_images"]})
    static = create_model("smastn", de_neutral="static", **TINY["smastn"])
    assert "onset_face" not in static.inputs
    out = static({"dynamic_images": batch["dynamic_images"]})
    torch.testing.assert_close(out["neutral_feature"], out["neutral_feature"][:1].expand(3, -1))
    with pytest.raises(ValueError, match="onset_face"):
        model.train()({"dynamic_images": batch["dynamic_images"]})


def test_smastn_mirror_flips_all_images_together():
    model = create_model("smastn", mirror=1.0, **TINY["smastn"])
    batch = {"dynamic_images": torch.randn(2, 3, 4, 4), "onset_face": torch.rand(2, 5, 5)}
    out = model.augment(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["dynamic_images"], batch["dynamic_images"].flip(-1))
    torch.testing.assert_close(out["onset_face"], batch["onset_face"].flip(-1))


# -- all three ---------------------------------------------------------------------
def make_batch(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    face = lambda: torch.randint(0, 256, (n, FACE, FACE), generator=generator).float()  # noqa: E731
    return {
        "apex_face": face(),
        "onset_face": face(),
        "clip_frames": torch.randint(0, 256, (n, CLIP_T, CLIP_S, CLIP_S), generator=generator).float(),
        "dynamic_images": torch.randn(n, K + 1, DI_S, DI_S, generator=generator) * 20,
    }


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_overfits_a_handful_of_samples(name):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = create_model(name, **TINY[name])
    batch = make_batch(6, generator)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60 if name == "meranet" else 40):
        optimiser.zero_grad()
        loss = model.loss(model(batch), target)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        predicted = model(batch)["logits"].argmax(1)
    assert predicted.tolist() == target.tolist(), f"{name}: final loss {float(loss):.3f}"


def test_model_inputs_come_from_the_cache(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cache.h5"
    arrays = {
        "apex_face": ArraySpec((FACE, FACE), "uint8"),
        "onset_face": ArraySpec((FACE, FACE), "uint8"),
        "clip_frames": ArraySpec((CLIP_T, CLIP_S, CLIP_S), "uint8"),
        "dynamic_images": ArraySpec((K + 1, DI_S, DI_S), "float32"),
    }
    with CacheWriter(path, params={"test": 1}, arrays=arrays) as writer:
        for i in range(4):
            frames = rng.integers(0, 256, size=(9, FACE, FACE)).astype(np.uint8)
            writer.append(
                {"key": f"casme2/sub0{i}/EP0{i}", "database": "casme2", "subject": f"sub0{i}",
                 "clip": f"EP0{i}", "emotion": "happiness", "label": 1,
                 "onset_frame": 1, "apex_frame": 5, "offset_frame": 9},
                {
                    "apex_face": frames[4],
                    "onset_face": frames[0],
                    "clip_frames": resample_clip(frames[:, ::2, ::2], CLIP_T),
                    "dynamic_images": dssi(frames, K),
                },
            )
    for name in sorted(TINY):
        model = create_model(name, **TINY[name]).eval()
        assert all(v is None for v in model_class(name).inputs.values())
        cache = read_cache(path, arrays=list(model.inputs))
        # As the data layer passes them: float32, shape (B, *column shape).
        batch = {k: torch.from_numpy(v.astype(np.float32)) for k, v in cache.arrays.items()}
        with torch.no_grad():
            logits = model(batch)["logits"]
        assert logits.shape == (4, 3) and bool(torch.isfinite(logits).all())
