"""FR, Dual-Inception, OFF-ApexNet and STSTNet: parameter counts from the published
layouts, the proposal loss against a hand computation, the inception block against
unmerged layers, forward shapes, and overfitting a handful of samples."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fr_mer.models import count_parameters, create_model, model_class
from fr_mer.models.flow_input import flip_flow
from fr_mer.models.fr import ATTENTIONS, FUSIONS, proposal_loss
from fr_mer.models.inception import InceptionBackbone, InceptionBlock, check_flow_channels

RELEASED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "megc2019" / "ststnet_weights"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flow_batch(n: int, channels: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, 28, 28, generator=g) * 255


# -- parameter counts ---------------------------------------------------------

def test_dual_inception_parameter_count_matches_layout():
    # Per stream: block 1 (1 -> 4 x 6): 1x1 12, 1x1->3x3 12 + 330, 1x1->5x5 12 + 906,
    # pool->1x1 12; block 2 (24 -> 4 x 16): 400, 400 + 2,320, 400 + 6,416, 400.
    stream = (12 + 12 + 330 + 12 + 906 + 12) + (400 + 400 + 2320 + 400 + 6416 + 400)
    head = (6272 * 1024 + 1024) + (1024 * 3 + 3)
    model = create_model("dual_inception")
    assert count_parameters(model) == 2 * stream + head == 6_449_867  # "about 6.45 M"


def test_off_apexnet_parameter_count_matches_layout():
    convs = 2 * ((5 * 5 * 1 * 6 + 6) + (5 * 5 * 6 * 16 + 16))
    fcs = (1568 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 3 + 3)
    assert count_parameters(create_model("off_apexnet")) == convs + fcs == 2_664_475


def test_ststnet_parameter_count_matches_released_network():
    # The paper says 1,670; the released network (conv biases, batch-norm affine) has 1,683.
    convs = (3 + 5 + 8) * (3 * 3 * 3 + 1)
    assert count_parameters(create_model("ststnet")) == convs + 2 * 16 + (400 * 3 + 3) == 1_683


@pytest.mark.skipif(not RELEASED_WEIGHTS.is_dir(), reason=f"released STSTNet weights not at {RELEASED_WEIGHTS}")
def test_ststnet_count_equals_released_state_dict():
    state = torch.load(RELEASED_WEIGHTS / "sub01.pth", map_location="cpu", weights_only=True)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    released = sum(v.numel() for k, v in state.items() if not k.endswith(buffers))
    assert released == count_parameters(create_model("ststnet"))


def test_fr_branch_parameters():
    model = create_model("fr", attention="none", branch_dim=8, fusion="concat")
    backbone = count_parameters(model.backbone)
    # three branches 6272 -> 8, three proposal scores 8 -> 1, classifier 24 -> 3
    assert count_parameters(model) == backbone + 3 * (6272 * 8 + 8) + 3 * (8 + 1) + (24 * 3 + 3)


# -- proposal loss ------------------------------------------------------------

SCORES = [[2.0, -1.0, 0.0], [0.5, 0.5, -2.0]]
TARGET = [0, 2]


def _hand_bce(balanced: bool) -> tuple[float, list[list[float]]]:
    """Plain-Python one-vs-rest BCE and its gradient, written from the definition."""
    n, k = len(SCORES), len(SCORES[0])
    positives = [sum(1 for t in TARGET if t == c) for c in range(k)]
    total, grad = 0.0, [[0.0] * k for _ in range(n)]
    for i in range(n):
        for c in range(k):
            s, y = SCORES[i][c], 1.0 if TARGET[i] == c else 0.0
            w = (n - positives[c]) / positives[c] if balanced and positives[c] else 1.0
            p = 1.0 / (1.0 + math.exp(-s))
            total += -(w * y * math.log(p) + (1 - y) * math.log(1 - p))
            # d/ds of -(w y log p + (1-y) log(1-p)) = -w y (1-p) + (1-y) p
            grad[i][c] = (-w * y * (1 - p) + (1 - y) * p) / (n * k)
    return total / (n * k), grad


@pytest.mark.parametrize("balanced", [False, True])
def test_proposal_loss_value_and_gradient_by_hand(balanced):
    scores = torch.tensor(SCORES, dtype=torch.float64, requires_grad=True)
    loss = proposal_loss(scores, torch.tensor(TARGET), balanced=balanced)
    loss.backward()
    value, grad = _hand_bce(balanced)
    assert loss.item() == pytest.approx(value, rel=1e-12)
    assert torch.allclose(scores.grad, torch.tensor(grad, dtype=torch.float64), rtol=1e-10, atol=0)


def test_proposal_loss_known_number():
    # Unbalanced, written out: mean of -log(sig(2)), -log(1-sig(-1)), -log(1-sig(0)),
    # -log(1-sig(.5)), -log(1-sig(.5)), -log(sig(-2)) = softplus of (-2, -1, 0, .5, .5, 2) / 6.
    expected = sum(math.log1p(math.exp(v)) for v in (-2, -1, 0, 0.5, 0.5, 2)) / 6
    got = proposal_loss(torch.tensor(SCORES, dtype=torch.float64), torch.tensor(TARGET)).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.86807, abs=1e-5)


def test_fr_loss_is_cross_entropy_plus_weighted_proposal_loss():
    torch.manual_seed(0)
    model = create_model("fr", proposal_weight=0.3, branch_dim=16)
    out = model({"flow": flow_batch(4)})
    target = torch.tensor([0, 1, 2, 1])
    expected = F.cross_entropy(out["logits"], target) + 0.3 * proposal_loss(out["proposal_scores"], target)
    assert torch.allclose(model.loss(out, target), expected)
    for off in ({"proposal_weight": 0.0}, {"proposal_loss": "none"}):
        plain = create_model("fr", branch_dim=16, **off)
        o = plain({"flow": flow_batch(4)})
        assert torch.allclose(plain.loss(o, target), F.cross_entropy(o["logits"], target))


# -- the inception backbone ---------------------------------------------------

def test_inception_block_equals_unmerged_branches():
    torch.manual_seed(1)
    block = InceptionBlock(3, 4).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    w, b = block.reduce.weight, block.reduce.bias
    one = F.relu(F.conv2d(x, w[0:4], b[0:4]))
    three = F.relu(F.conv2d(F.relu(F.conv2d(x, w[4:8], b[4:8])), block.conv3.weight, block.conv3.bias, padding=1))
    five = F.relu(F.conv2d(F.relu(F.conv2d(x, w[8:12], b[8:12])), block.conv5.weight, block.conv5.bias, padding=2))
    pool = F.relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), block.pool_proj.weight, block.pool_proj.bias))
    assert torch.allclose(block(x), torch.cat([one, three, five, pool], 1))


def test_backbone_streams_are_independent_and_shaped():
    torch.manual_seed(2)
    backbone = InceptionBackbone(streams=2)
    x = torch.randn(3, 2, 28, 28)
    y = backbone(x)
    assert y.shape == (3, 128, 7, 7) and backbone.out_size(28) == 7
    changed = x.clone()
    changed[:, 1] = torch.randn(3, 28, 28)
    z = backbone(changed)
    assert torch.allclose(y[:, :64], z[:, :64])  # u stream untouched by v
    assert not torch.allclose(y[:, 64:], z[:, 64:])
    with pytest.raises(ValueError, match="expected"):
        backbone(torch.randn(3, 3, 28, 28))


def _minmax255(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo) * 255


def test_flip_flow_is_the_scaled_flow_of_the_mirrored_face():
    g = torch.Generator().manual_seed(5)
    u, v, strain = torch.randn(3, 4, 1, 6, 6, generator=g)
    strain = strain.abs()
    cached = torch.cat([_minmax255(v), _minmax255(u), _minmax255(strain)], 1)  # order (v, u, strain)
    # In a mirror, x -> -x: u(x) becomes -u(-x), v(x) becomes v(-x), strain likewise.
    expected = torch.cat([_minmax255(v.flip(-1)), _minmax255(-u.flip(-1)), _minmax255(strain.flip(-1))], 1)
    flipped = flip_flow(cached, ("v", "u", "strain"), torch.Generator().manual_seed(0), p=1.0)
    assert torch.allclose(flipped, expected, atol=1e-4)
    assert torch.equal(flip_flow(cached, ("v", "u", "strain"), torch.Generator().manual_seed(0), p=0.0), cached)
    some = flip_flow(cached, ("v", "u", "strain"), torch.Generator().manual_seed(1), p=0.5)
    kept = [torch.equal(some[i], cached[i]) for i in range(4)]
    assert all(k or torch.allclose(some[i], expected[i], atol=1e-4) for i, k in enumerate(kept))


def test_models_augment_mirrors_flow():
    model = create_model("fr", channels=("u", "v"))
    x = flow_batch(64)
    out = model.augment({"flow": x}, torch.Generator().manual_seed(0))["flow"]
    flipped = torch.tensor([not torch.equal(out[i], x[i]) for i in range(64)])
    assert 16 < int(flipped.sum()) < 48
    assert torch.allclose(out[flipped][:, 0], 255 - x[flipped][:, 0].flip(-1))


# -- forward shapes and options -----------------------------------------------

@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_fr_forward_shapes(attention, fusion):
    model = create_model("fr", attention=attention, fusion=fusion, branch_dim=16)
    out = model({"flow": flow_batch(5)})
    assert out["logits"].shape == (5, 3) and out["proposal_scores"].shape == (5, 3)
    model.loss(out, torch.tensor([0, 1, 2, 0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["fr", "dual_inception"])
def test_strain_channel_adds_a_stream(name):
    model = create_model(name, channels=("u", "v", "strain"))
    assert model.inputs == {"flow": ("u", "v", "strain")}
    assert model_class(name).inputs == {"flow": ("u", "v")}  # the class default is untouched
    assert model({"flow": flow_batch(2, channels=3)})["logits"].shape == (2, 3)
    assert create_model(name, channels="u,v,strain").inputs["flow"] == ("u", "v", "strain")


def test_off_apexnet_forward_shape():
    model = create_model("off_apexnet")
    assert model({"flow": flow_batch(3)})["logits"].shape == (3, 3)


@pytest.mark.parametrize("bad", [
    {"attention": "global"}, {"fusion": "max"}, {"proposal_loss": "focal"}, {"branch_dim": 0},
    {"dropout": 1.0}, {"proposal_weight": -1.0}, {"channels": ("u", "w")}, {"channels": ("u", "u")},
])
def test_fr_rejects_bad_options(bad):
    with pytest.raises(ValueError, match="fr|channels"):
        create_model("fr", **bad)


def test_check_flow_channels():
    assert check_flow_channels(" u, v ") == ("u", "v")
    with pytest.raises(ValueError, match="u,v,strain"):
        check_flow_channels(())


# -- learning -----------------------------------------------------------------

@pytest.mark.parametrize("name,options", [
    ("fr", {"branch_dim": 32}),
    ("fr", {"attention": "channel", "fusion": "sum", "proposal_loss": "balanced_bce", "branch_dim": 32}),
    ("dual_inception", {}),
    ("off_apexnet", {}),
])
def test_overfits_a_tiny_batch(name, options):
    torch.manual_seed(3)
    model = create_model(name, **options)
    x = flow_batch(9, seed=4)
    y = torch.tensor([0, 1, 2] * 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    first = None
    for _ in range(30):
        loss = model.loss(model({"flow": x}), y)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model({"flow": x})
    assert (out["logits"].argmax(1) == y).all()
    assert loss.item() < 0.3 * first
    if "proposal_scores" in out:  # each branch has learnt to say "mine" for its own class
        assert (out["proposal_scores"].argmax(1) == y).all()


def test_models_are_registered_with_recipes():
    for name in ("fr", "dual_inception", "off_apexnet"):
        recipe = model_class(name).recipe
        assert recipe.optimizer == "adam" and recipe.epochs > 0
    assert model_class("fr").recipe == model_class("dual_inception").recipe  # same recipe: a fair ablation
    assert isinstance(create_model("fr").backbone, nn.Module)
