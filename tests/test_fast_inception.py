"""The fast Dual-Inception step equals the plain network.

The reference here is the textbook composition (Zhou et al., FG 2019), written
with nothing but ``F.conv2d``, ``F.max_pool2d`` and ``torch.cat`` in the
default memory layout: four branches per block with separate 1x1
convolutions, concatenated at full resolution, then pooled. fr-mer's models
(the same parameters) must give the same outputs and the same gradient of
every parameter, in training and evaluation mode, and the fused Adam step of
``make_optimizer`` the same update as torch's per-tensor Adam.
"""
from __future__ import annotations

import types

import pytest
import torch
from torch.nn import functional as F

from fr_mer.models import create_model, model_class
from fr_mer.models.fr import _BranchLinear, _SharedInputBranches
from fr_mer.models.inception import InceptionBackbone
from fr_mer.training import make_optimizer


def reference_block(block, x):
    f, w, b = block.filters, block.reduce.weight, block.reduce.bias
    one = F.relu(F.conv2d(x, w[:f], b[:f]))
    three = F.relu(F.conv2d(F.relu(F.conv2d(x, w[f:2 * f], b[f:2 * f])), block.conv3.weight, block.conv3.bias,
                            padding=1))
    five = F.relu(F.conv2d(F.relu(F.conv2d(x, w[2 * f:], b[2 * f:])), block.conv5.weight, block.conv5.bias,
                           padding=2))
    pool = F.relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), block.pool_proj.weight, block.pool_proj.bias))
    return torch.cat([one, three, five, pool], dim=1)


def reference_backbone(backbone, x):
    outs = []
    for i, stream in enumerate(backbone.streams):
        z = x[:, i:i + 1].contiguous()
        for block in stream.blocks:
            z = F.max_pool2d(reference_block(block, z), 2, 2)
        outs.append(z)
    return torch.cat(outs, dim=1)


def cached_flow(n, channels=2, seed=0, dtype=torch.float32):
    """Integer grey levels 0..255 as the cache holds them: many exact ties in the pooling windows."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, 28, 28), generator=g).to(dtype)


def loss_and_grads(model, batch, target):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = model.loss(out, target)
    loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


def with_reference_forward(model):
    """Run ``model`` with the reference backbone and, for FR, the plain einsum form of the class branches."""
    model.backbone.forward = types.MethodType(reference_backbone, model.backbone)
    for module in model.modules():
        if isinstance(module, _BranchLinear):
            module.shared_input = types.MethodType(
                lambda self, x: torch.einsum("bi,kio->bko", x, self.weight) + self.bias, module)
    return model


@pytest.mark.parametrize("name", ["fr", "dual_inception"])
@pytest.mark.parametrize("training", [True, False])
def test_fast_model_equals_the_plain_network_in_outputs_and_gradients(name, training):
    torch.manual_seed(3)
    fast = create_model(name).double().train(training)
    plain = with_reference_forward(create_model(name).double().train(training))
    plain.load_state_dict(fast.state_dict())
    batch = {"flow": cached_flow(6, dtype=torch.float64)}
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    out_fast, grads_fast = loss_and_grads(fast, batch, target)
    out_plain, grads_plain = loss_and_grads(plain, batch, target)
    for key in out_plain:
        assert torch.allclose(out_fast[key], out_plain[key], rtol=1e-10, atol=1e-12), key
    assert grads_fast.keys() == grads_plain.keys()
    for key, grad in grads_plain.items():
        assert torch.allclose(grads_fast[key], grad, rtol=1e-9, atol=1e-12), key


def test_fast_backbone_in_float32_within_float_tolerance():
    torch.manual_seed(4)
    backbone = InceptionBackbone(streams=3)
    x = cached_flow(4, channels=3, seed=1) / 127.5 - 1.0
    fast = backbone(x)
    plain = reference_backbone(backbone, x)
    assert fast.shape == (4, 192, 7, 7)
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, list(backbone.parameters()), g)
    grads_plain = torch.autograd.grad(plain, list(backbone.parameters()), g)
    for a, b in zip(grads_fast, grads_plain):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("name", ["fr", "dual_inception"])
def test_state_dict_keys_and_shapes_are_the_plain_networks(name):
    model = create_model(name)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stream = {"reduce.weight": (18, 1, 1, 1), "reduce.bias": (18,), "conv3.weight": (6, 6, 3, 3),
              "conv3.bias": (6,), "conv5.weight": (6, 6, 5, 5), "conv5.bias": (6,),
              "pool_proj.weight": (6, 1, 1, 1), "pool_proj.bias": (6,)}
    for s in (0, 1):
        for key, shape in stream.items():
            assert shapes[f"backbone.streams.{s}.blocks.0.{key}"] == shape
        assert shapes[f"backbone.streams.{s}.blocks.1.reduce.weight"] == (48, 24, 1, 1)
        assert shapes[f"backbone.streams.{s}.blocks.1.conv5.weight"] == (16, 16, 5, 5)
    assert sum(k.startswith("backbone.") for k in shapes) == 2 * 2 * 8
    if name == "fr":
        assert shapes["branch.weight"] == (3, 6272, 256) and shapes["classifier.weight"] == (3, 768)
    else:
        assert shapes["fc1.weight"] == (1024, 6272) and shapes["fc2.weight"] == (3, 1024)
    # A checkpoint of one loads into the other, every key used.
    plain = with_reference_forward(create_model(name))
    assert not plain.load_state_dict(model.state_dict(), strict=True).missing_keys


def test_shared_input_branches_equal_the_per_branch_products_and_their_gradients():
    torch.manual_seed(5)
    layer = _BranchLinear(3, 7, 4).double()
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    out = layer.shared_input(x)
    expected = torch.stack([x @ layer.weight[k] + layer.bias[k] for k in range(3)], dim=1)
    assert torch.allclose(out, expected, rtol=1e-12)
    weight, bias = layer.weight.detach().requires_grad_(), layer.bias.detach().requires_grad_()
    assert torch.autograd.gradcheck(_SharedInputBranches.apply, (x, weight, bias))


def test_make_optimizer_fuses_adam_and_steps_like_the_per_tensor_loop():
    recipe = model_class("fr").recipe
    torch.manual_seed(6)
    fast = create_model("dual_inception", hidden=32)
    slow = create_model("dual_inception", hidden=32)
    slow.load_state_dict(fast.state_dict())
    optimizer = make_optimizer(fast, recipe)
    assert optimizer.defaults["fused"] is True
    reference = torch.optim.Adam(slow.parameters(), lr=recipe.lr, foreach=False)
    batch, target = {"flow": cached_flow(4, seed=2)}, torch.tensor([0, 1, 2, 0])
    for _ in range(3):
        for model, opt in ((fast, optimizer), (slow, reference)):
            opt.zero_grad(set_to_none=True)
            model.loss(model(batch), target).backward()
            opt.step()
    for (key, a), b in zip(fast.state_dict().items(), slow.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), key


def test_pooled_pixel_products_equal_pooling_the_full_size_map():
    from fr_mer.models.inception import _pixel_products, _pooled_pixel_products

    plane = cached_flow(3, channels=1, seed=7, dtype=torch.float64)  # many tied grey levels
    weight = torch.tensor([0.5, -0.25, 2.0, -3.0], dtype=torch.float64).view(4, 1, 1, 1).requires_grad_()
    bias = torch.tensor([-60.0, 30.0, 0.0, 400.0], dtype=torch.float64, requires_grad=True)
    full = F.max_pool2d(_pixel_products(weight, bias, plane), 2, 2)
    fast = _pooled_pixel_products(weight, bias, plane)
    assert torch.equal(full, fast) and fast.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(full)
    assert all(torch.allclose(a, b, rtol=1e-12) for a, b in zip(
        torch.autograd.grad(full, (weight, bias), g), torch.autograd.grad(fast, (weight, bias), g)))
