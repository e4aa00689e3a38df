"""STSTNet: the released layout, equality with a plain three-stream network, the fused ops, dropout.

The reference below is written the way STSTNet's public code writes it (three
convolutions, three batch norms, max-pool, average pool, linear), with nn and
F layers only; fr-mer's model computes the same function through
``fr_mer.ops`` (one merged convolution, batch norm applied after pooling).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F

from fr_mer import ops
from fr_mer.cli import main
from fr_mer.models import count_parameters, create_model

MEGC2019 = Path(__file__).resolve().parents[2] / "shared" / "data" / "megc2019"
STREAMS = (("conv1", "bn1", 3), ("conv2", "bn2", 5), ("conv3", "bn3", 8))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ThreeStream(nn.Module):
    """STSTNet as its public code builds it; ``dropout`` switches the three dropouts."""

    def __init__(self, dropout: bool = False) -> None:
        super().__init__()
        for conv, bn, width in STREAMS:
            setattr(self, conv, nn.Conv2d(3, width, kernel_size=3, padding=2))
            setattr(self, bn, nn.BatchNorm2d(width))
        self.fc = nn.Linear(400, 3)
        self.use_dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = []
        for conv, bn, _ in STREAMS:
            y = getattr(self, bn)(F.relu(getattr(self, conv)(x)))
            y = F.max_pool2d(y, kernel_size=3, stride=3, padding=1)
            streams.append(F.dropout(y, 0.5, self.training and self.use_dropout))
        y = F.avg_pool2d(torch.cat(streams, 1), kernel_size=2, stride=2)
        return self.fc(y.flatten(1))


def flows(n: int, seed: int = 0) -> torch.Tensor:
    """Flow images like the released ones: integers 0..255, with flat (tied) regions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 28, 28), generator=g).float()
    x[:, :, :6, :6] = 0.0  # saturated corners give exactly equal activations in a pooling window
    x[:, :, -5:, -5:] = 255.0
    return x


def paired(seed: int = 0, negative_gamma: bool = True) -> tuple[ThreeStream, nn.Module]:
    torch.manual_seed(seed)
    reference = ThreeStream()
    with torch.no_grad():
        for _, bn, width in STREAMS:
            layer = getattr(reference, bn)
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
            layer.running_mean.uniform_(0.0, 50.0)
            layer.running_var.uniform_(100.0, 2000.0)
        if negative_gamma:  # a negative slope turns max-pooling after BN into min-pooling before it
            reference.bn1.weight[1] = -0.7
            reference.bn3.weight[[0, 5]] = torch.tensor([-1.2, -0.3])
    model = create_model("ststnet", dropout=0.0)
    model.load_state_dict(reference.state_dict())
    return reference, model


def merged_grads(reference: ThreeStream) -> dict[str, torch.Tensor]:
    def cat(name: str, part: int, attr: str) -> torch.Tensor:
        return torch.cat([getattr(getattr(reference, s[part]), attr).grad for s in STREAMS])

    return {"conv.weight": cat("conv", 0, "weight"), "conv.bias": cat("conv", 0, "bias"),
            "bn.weight": cat("bn", 1, "weight"), "bn.bias": cat("bn", 1, "bias"),
            "fc.weight": reference.fc.weight.grad, "fc.bias": reference.fc.bias.grad}


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp(min=1e-12)
    assert (actual - expected).abs().max() <= rel * scale, (actual - expected).abs().max() / scale


# -- layout ---------------------------------------------------------------------

def test_parameter_count_matches_the_released_network():
    # The paper states 1,670; the network its code releases (convolution biases,
    # batch-norm scale and shift) has 3 x 3 x 3 x 16 + 16 + 2 x 16 + 400 x 3 + 3 = 1,683.
    assert count_parameters(create_model("ststnet")) == 1683


def released_like_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = ThreeStream().state_dict()
    for _, bn, width in STREAMS:
        state[f"{bn}.running_mean"] = torch.rand(width) * 40
        state[f"{bn}.running_var"] = torch.rand(width) * 900 + 100
        state[f"{bn}.num_batches_tracked"] = torch.tensor(1600)
    return state


def test_state_dict_uses_the_released_keys_and_shapes():
    released = released_like_state_dict()
    ours = create_model("ststnet").state_dict()
    assert set(ours) == set(released)
    assert all(ours[k].shape == released[k].shape and ours[k].dtype == released[k].dtype for k in released)


def test_released_state_dict_loads_and_round_trips(tmp_path):
    released = released_like_state_dict()
    model = create_model("ststnet").eval()
    model.load_state_dict(released)
    assert int(model.bn.num_batches_tracked) == 1600
    for key, value in model.state_dict().items():
        assert torch.equal(value, released[key]), key
    torch.save(model.state_dict(), tmp_path / "sub01.pth")
    fresh = create_model("ststnet").eval()
    fresh.load_state_dict(torch.load(tmp_path / "sub01.pth", weights_only=True))
    x = flows(8)
    torch.testing.assert_close(fresh({"flow": x})["logits"], model({"flow": x})["logits"], rtol=0, atol=0)
    reference = ThreeStream().eval()
    reference.load_state_dict(fresh.state_dict())
    torch.testing.assert_close(fresh({"flow": x})["logits"], reference(x), rtol=1e-5, atol=1e-5)


# -- the same function as the three-stream network ----------------------------

@pytest.mark.parametrize("batch", [16, 100])
def test_eval_mode_equals_three_streams(batch):
    reference, model = paired()
    reference.eval(), model.eval()
    x = flows(batch, seed=1)
    actual = model({"flow": x})["logits"]
    torch.testing.assert_close(actual, reference(x), rtol=1e-5, atol=1e-5)
    # Gradients in evaluation mode (running statistics are constants), against float64.
    reference.double()
    expected = reference(x.double())
    actual.sum().backward()
    expected.sum().backward()
    wanted = merged_grads(reference)
    for name, parameter in model.named_parameters():
        assert_close_rel(parameter.grad.double(), wanted[name], 1e-4)


@pytest.mark.parametrize("negative_gamma, batch", [(False, 24), (True, 24), (True, 100)])
def test_train_mode_without_dropout_equals_three_streams(negative_gamma, batch):
    # The reference runs in float64: in float32 its own convolution-weight gradient
    # is off by ~1e-3 (relative), as batch norm's dense backward rounds each element
    # and inputs of 0..255 make the weight gradient a sum with large cancellations;
    # fr-mer's is within ~1e-6 of the float64 value.
    reference, model = paired(seed=2, negative_gamma=negative_gamma)
    reference.double()
    reference.train(), model.train()
    x, target = flows(batch, seed=3), torch.arange(batch) % 3  # 100 samples: two CPU chunks
    weights = torch.linspace(-1.0, 1.0, 3)
    for step in range(2):  # the second step sees updated running statistics and counters
        for module in (reference, model):
            module.zero_grad(set_to_none=True)
        expected = reference(x.double())
        actual = model({"flow": x})["logits"]
        assert_close_rel(actual.double(), expected, 1e-5)
        (F.cross_entropy(expected, target) + (expected * weights.double()).sum()).backward()
        (F.cross_entropy(actual, target) + (actual * weights).sum()).backward()
        wanted = merged_grads(reference)
        for name, parameter in model.named_parameters():
            assert_close_rel(parameter.grad.double(), wanted[name], 1e-4)
    for key, value in reference.state_dict().items():
        assert_close_rel(model.state_dict()[key].double(), value.double(), 1e-5)


@pytest.mark.parametrize("chunk, onednn", [(None, True), (2, True), (None, False)])
def test_fused_op_matches_composition_on_other_shapes(chunk, onednn, monkeypatch):
    if not onednn:  # the plain convolution + in-place ReLU path (GPUs, builds without oneDNN)
        monkeypatch.setattr(ops, "_use_mkldnn_relu", lambda x: False)
    torch.manual_seed(4)
    x = torch.randn(5, 2, 13, 11) * 3
    weight = torch.randn(6, 2, 3, 3, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    gamma = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.5, 0.8], requires_grad=True)
    beta = torch.randn(6, requires_grad=True)
    params = (weight, bias, gamma, beta)
    grads = []
    outputs = []
    for fused in (True, False):
        running = (torch.zeros(6), torch.ones(6))
        if fused:
            out = ops.conv_relu_bn_maxpool(x, *params, *running, training=True, momentum=0.2, eps=1e-3,
                                           conv_padding=1, pool_kernel=2, pool_stride=2, pool_padding=0,
                                           chunk=chunk)
        else:
            y = F.batch_norm(F.relu(F.conv2d(x, weight, bias, padding=1)), *running, gamma, beta,
                             training=True, momentum=0.2, eps=1e-3)
            out = F.max_pool2d(y, 2, 2, 0)
        outputs.append((out, running))
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum(),
                                         params))
    (fused_out, fused_running), (plain_out, plain_running) = outputs
    assert fused_out.shape == plain_out.shape == (5, 6, 6, 5)
    torch.testing.assert_close(fused_out, plain_out, rtol=1e-4, atol=1e-5)
    for a, b in zip(fused_running, plain_running):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        assert_close_rel(a, b, 1e-4)


def test_avg_pool_linear_is_pool_then_linear():
    torch.manual_seed(5)
    weight, bias = torch.randn(3, 16 * 5 * 5), torch.randn(3)
    for x in (torch.randn(4, 16, 10, 10), torch.randn(4, 16, 10, 10).contiguous(memory_format=torch.channels_last)):
        expected = F.linear(F.avg_pool2d(x, 2).flatten(1), weight, bias)
        torch.testing.assert_close(ops.avg_pool_linear(x, weight, bias, 2), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        ops.avg_pool_linear(torch.randn(1, 16, 11, 11), weight, bias, 2)


# -- dropout ----------------------------------------------------------------------

def test_random_bits_mask_keeps_half_scaled_by_two():
    torch.manual_seed(6)
    mask = ops.random_bits_mask((400, 1000), 2.0)
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    kept = (mask > 0).double()
    n = kept.numel()
    # keep rate 1/2: 5 standard deviations of a binomial proportion
    assert abs(kept.mean().item() - 0.5) < 5 * (0.25 / n) ** 0.5
    # every bit position of the 64-bit draws is fair, and neighbours are independent
    per_bit = kept.view(-1, 64).mean(0)
    assert (per_bit - 0.5).abs().max() < 5 * (0.25 / (n / 64)) ** 0.5
    both = (kept[:, 1:] * kept[:, :-1]).mean().item()
    assert abs(both - 0.25) < 5 * (0.1875 / kept[:, 1:].numel()) ** 0.5
    assert ops.random_bits_mask((3, 5, 7), 2.0).shape == (3, 5, 7)


def test_dropout_masks_are_seeded_and_other_rates_are_exact():
    torch.manual_seed(7)
    a = ops.dropout_mask((1000,), 0.5)
    torch.manual_seed(7)
    assert torch.equal(a, ops.dropout_mask((1000,), 0.5))
    mask = ops.dropout_mask((200_000,), 0.3)
    assert mask.unique().tolist() == pytest.approx([0.0, 1 / 0.7])
    assert abs((mask > 0).float().mean().item() - 0.7) < 5 * (0.21 / 200_000) ** 0.5
    with pytest.raises(ValueError, match="dropout probability"):
        ops.dropout_mask((3,), 1.0)


def test_model_dropout_zeroes_half_of_the_pooled_maps_and_doubles_the_rest():
    torch.manual_seed(8)
    model = create_model("ststnet").train()
    x = torch.ones(64, 16, 10, 10).contiguous(memory_format=torch.channels_last)
    y = ops.dropout(x, model.dropout)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert abs((y > 0).float().mean().item() - 0.5) < 5 * (0.25 / y.numel()) ** 0.5
    # In training mode the network's output is random, in evaluation mode it is not.
    x = flows(4)
    assert not torch.equal(model({"flow": x})["logits"], model({"flow": x})["logits"])
    model.eval()
    assert torch.equal(model({"flow": x})["logits"], model({"flow": x})["logits"])


def test_training_mode_expectation_matches_reference_dropout():
    """Averaged over many masks, fr-mer's dropout and F.dropout give the same mean output."""
    reference, model = paired(seed=9, negative_gamma=False)
    reference.use_dropout = True
    model.dropout = 0.5
    reference.train(), model.train()
    x = flows(8, seed=10)
    torch.manual_seed(11)
    with torch.no_grad():
        ours = torch.stack([model({"flow": x})["logits"] for _ in range(300)])
        theirs = torch.stack([reference(x) for _ in range(300)])
    spread = (ours.std(0) + theirs.std(0)) / 2
    assert ((ours.mean(0) - theirs.mean(0)).abs() < 5 * spread / 300 ** 0.5 + 1e-4).all()
    assert torch.allclose(ours.std(0), theirs.std(0), rtol=0.25)


# -- training ---------------------------------------------------------------------

def test_short_training_learns_a_separable_problem():
    g = torch.Generator().manual_seed(12)
    labels = torch.arange(96) % 3
    patterns = torch.rand(3, 3, 28, 28, generator=g) * 255
    x = (patterns[labels] * 0.6 + torch.rand(96, 3, 28, 28, generator=g) * 100).round()
    torch.manual_seed(12)
    model = create_model("ststnet")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(40):
        for index in torch.randperm(96).split(32):
            loss = F.cross_entropy(model({"flow": x[index]})["logits"], labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model({"flow": x})["logits"].argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95


# -- released weights on the released inputs --------------------------------------

@pytest.mark.skipif(not (MEGC2019 / "ststnet_weights").is_dir(),
                    reason=f"STSTNet's released inputs and weights are not at {MEGC2019}")
def test_released_weights_reproduce_published_figures(tmp_path):
    runner = CliRunner()
    cache = tmp_path / "megc2019.h5"
    result = runner.invoke(main, ["import-ststnet", "--images", str(MEGC2019 / "ststnet_flow"),
                                  "--labels", str(MEGC2019 / "combined_3class_gt.csv"), "--out", str(cache)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", "--cache", str(cache), "--model", "ststnet", "--weights",
                                  str(MEGC2019 / "ststnet_weights"), "--out", str(tmp_path / "released")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "released" / "metrics.json").read_text())
    assert round(metrics["full"]["uf1"], 4) == 0.7209
    assert round(metrics["full"]["uar"], 4) == 0.7250
    expected = {"smic": (0.6871, 0.6876), "casme2": (0.8304, 0.8304), "samm": (0.5993, 0.6145)}
    for database, (uf1, uar) in expected.items():
        assert (round(metrics[database]["uf1"], 4), round(metrics[database]["uar"], 4)) == (uf1, uar)
