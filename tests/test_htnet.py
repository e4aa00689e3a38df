"""HTNet: its building blocks against hand-computed cases, its regions, its size, and that it learns."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fr_mer.data import load_dataset
from fr_mer.errors import ParameterError
from fr_mer.models import count_parameters, create_model
from fr_mer.models.htnet import (
    DEFAULT_CENTRES,
    ChannelLayerNorm,
    ConvSelfAttention,
    Hierarchy,
    from_blocks,
    region_centres,
    tile_regions,
    to_blocks,
)
from fr_mer.pipeline.cache import ArraySpec, CacheWriter


def _landmarks(left_eye, right_eye, left_mouth, right_mouth) -> torch.Tensor:
    """(1, 68, 2) landmarks: the eye points all on one spot each, the mouth corners as given, others far off."""
    points = torch.full((68, 2), 100.0)
    points[36:42] = torch.tensor(left_eye)
    points[42:48] = torch.tensor(right_eye)
    points[48] = torch.tensor(left_mouth)
    points[54] = torch.tensor(right_mouth)
    return points.unsqueeze(0)


def test_channel_layer_norm_by_hand():
    norm = ChannelLayerNorm(2, eps=0.0)
    x = torch.zeros(1, 2, 1, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 3.0])  # mean 2, biased variance 1
    x[0, :, 0, 1] = torch.tensor([10.0, 30.0])  # mean 20, biased variance 100
    y = norm(x)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([-1.0, 1.0]))
    assert torch.allclose(y[0, :, 0, 1], torch.tensor([-1.0, 1.0]))
    with torch.no_grad():
        norm.weight.fill_(2.0)
        norm.bias.fill_(0.5)
    assert torch.allclose(norm(x)[0, :, 0, 0], torch.tensor([-1.5, 2.5]))


def test_region_centres_mean_of_eye_points_rounded_in_tiling_order():
    points = torch.full((1, 68, 2), 100.0)
    points[0, 36:42] = torch.tensor([[9.0, 11.0], [11.0, 13.0]]).repeat(3, 1)  # mean (10, 12)
    points[0, 42:48] = torch.tensor([[19.0, 12.0], [20.0, 12.0], [21.0, 12.0]]).repeat(2, 1)  # mean (20, 12)
    points[0, 48] = torch.tensor([9.4, 20.6])
    points[0, 54] = torch.tensor([19.6, 20.4])
    centres = region_centres(points)
    assert centres.tolist() == [[[10, 12], [9, 21], [20, 12], [20, 20]]]


def test_region_centres_are_clamped_to_7_21():
    centres = region_centres(_landmarks((2.0, 3.0), (27.0, 5.0), (-4.0, 25.0), (22.0, 30.0)))
    assert centres.tolist() == [[[7, 7], [7, 21], [21, 7], [21, 21]]]


def test_region_centres_of_a_sample_without_landmarks_are_the_script_defaults():
    points = torch.cat([_landmarks((10.0, 10.0), (18.0, 10.0), (10.0, 20.0), (18.0, 20.0)),
                        torch.full((1, 68, 2), float("nan"))])
    centres = region_centres(points)
    assert centres[0].tolist() == [[10, 10], [10, 20], [18, 10], [18, 20]]
    expected = [[round(x), round(y)] for x, y in DEFAULT_CENTRES]
    assert expected == [[10, 11], [10, 22], [21, 11], [21, 22]]
    assert centres[1].tolist() == [[10, 11], [10, 21], [21, 11], [21, 21]]  # 22 clamped to 21


def test_tile_regions_places_each_crop_in_its_quadrant():
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    flow = torch.stack([rows * 28 + cols, 1000 + rows * 28 + cols, -(rows * 28 + cols)]).unsqueeze(0)
    centres = torch.tensor([[[10, 12], [9, 21], [20, 8], [21, 21]]])  # (x, y)
    tiled = tile_regions(flow, centres)
    assert tiled.shape == (1, 3, 28, 28)
    quadrants = {(0, 0): (10, 12), (0, 14): (9, 21), (14, 0): (20, 8), (14, 14): (21, 21)}
    for (top, left), (x, y) in quadrants.items():
        expected = flow[0, :, y - 7:y + 7, x - 7:x + 7]
        assert torch.equal(tiled[0, :, top:top + 14, left:left + 14], expected)
    # the top-left pixel of the left-eye crop is flow[row y - 7, column x - 7]
    assert tiled[0, 0, 0, 0].item() == (12 - 7) * 28 + (10 - 7)


def test_blocks_round_trip_and_hold_their_quadrant():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    blocks = to_blocks(x, 2)
    assert blocks.shape == (8, 3, 2, 2)
    assert torch.equal(blocks[1], x[0, :, 0:2, 2:4])  # sample 0, block row 0, block column 1
    assert torch.equal(blocks[6], x[1, :, 2:4, 0:2])  # sample 1, block row 1, block column 0
    assert torch.equal(from_blocks(blocks, 2), x)


def test_attention_stays_inside_its_block():
    torch.manual_seed(0)
    level = Hierarchy(dim=8, grid=2, block_side=2, depth=2, heads=2, mlp_mult=2, dropout=0.0).eval()
    x = torch.randn(1, 8, 4, 4)
    changed = x.clone()
    changed[0, :, 0:2, 0:2] += 5.0  # only the top-left block
    y, y_changed = level(x), level(changed)
    assert not torch.allclose(y[0, :, 0:2, 0:2], y_changed[0, :, 0:2, 0:2])
    assert torch.allclose(y[0, :, 2:, :], y_changed[0, :, 2:, :])
    assert torch.allclose(y[0, :, :2, 2:], y_changed[0, :, :2, 2:])


def test_attention_of_one_position_is_its_projected_value():
    torch.manual_seed(0)
    attention = ConvSelfAttention(6, heads=3).eval()
    x = torch.randn(2, 6, 1, 1)
    value = attention.qkv(x)[:, 12:]  # softmax over one key is 1: the output is out(v)
    assert torch.allclose(attention(x), attention.out(value), atol=1e-6)


def _expected_parameters(dim: int, heads: int, repeats: tuple[int, ...], mlp: int, patch: int, classes: int) -> int:
    """Closed-form count of the layout in fr_mer/models/htnet.py's docstring."""
    total = 3 * patch * patch * dim + dim  # patch embedding
    side = 28 // patch
    block_side = side // 2 ** (len(repeats) - 1)
    for level, depth in enumerate(repeats):
        width, level_heads = dim * 2 ** level, heads * 2 ** level
        inner = (width // level_heads) * level_heads
        block = 2 * 2 * width  # two channel LayerNorms
        block += width * 3 * inner + inner * width + width  # qkv (no bias), output projection
        block += width * mlp * width + mlp * width + mlp * width * width + width  # MLP
        total += block_side ** 2 + depth * block
        if level < len(repeats) - 1:
            total += width * 2 * width * 9 + 2 * width + 2 * 2 * width  # aggregation conv + LayerNorm
    last = dim * 2 ** (len(repeats) - 1)
    return total + 2 * last + last * classes + classes


def test_parameter_count_of_the_script_settings():
    model = create_model("htnet")
    assert count_parameters(model) == _expected_parameters(256, 3, (2, 2, 10), 4, 7, 3) == 139_582_982
    small = create_model("htnet", dim=16, heads=2, block_repeats=(1, 2))
    assert count_parameters(small) == _expected_parameters(16, 2, (1, 2), 4, 7, 3)


def test_options_are_checked():
    with pytest.raises(ParameterError, match="patch_size"):
        create_model("htnet", patch_size=5)
    with pytest.raises(ParameterError, match="block_repeats"):
        create_model("htnet", block_repeats=(1, 1, 1, 1))  # 8x8 blocks of a 4x4 map


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = create_model("htnet", dim=16, heads=2, block_repeats=(1, 1, 2))
    flow = torch.rand(6, 3, 28, 28) * 255
    points = torch.rand(6, 68, 2) * 14 + 7
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = {"flow": flow, "flow_landmarks": points}
    for _ in range(60):
        optimiser.zero_grad()
        loss = model.loss(model(batch), target)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch)["logits"].argmax(dim=1), target)
    assert loss.item() < 0.1


def test_data_layer_rescales_face_landmarks_to_the_flow_grid(tmp_path):
    """A preprocess cache computes the flow on the face crop: its landmarks, rescaled, are the flow's."""
    face_size = 112
    specs = {
        "flow": ArraySpec((3, 28, 28), "f4", {"channels": "u,v,strain"}),
        "landmarks": ArraySpec((68, 2), "f4", {}),
    }
    landmarks = np.full((68, 2), 55.5, dtype=np.float32)  # the centre of a 112 px crop
    landmarks[0] = (-0.5, 111.5)  # the crop's outer edges
    with CacheWriter(tmp_path / "c.h5", params={"align": {"face_size": face_size}}, arrays=specs) as writer:
        writer.append({"key": "casme2/sub01/a", "database": "casme2", "subject": "sub01", "clip": "a",
                       "emotion": "negative", "label": 0},
                      {"flow": np.zeros((3, 28, 28), np.float32), "landmarks": landmarks})
    data = load_dataset(tmp_path / "c.h5", {"flow_landmarks": None}, torch.device("cpu"),
                        protocol="loso", database="casme2")
    points = data.inputs["flow_landmarks"][0]
    assert torch.allclose(points[1], torch.tensor([13.5, 13.5]))
    assert torch.allclose(points[0], torch.tensor([-0.5, 27.5]))
    assert not math.isnan(points.sum().item())


def test_flow_of_another_size_is_refused_with_what_to_do():
    model = create_model("htnet", dim=8, heads=2, block_repeats=(1,))
    with pytest.raises(ParameterError, match="--feature-size 28"):
        model({"flow": torch.zeros(1, 3, 32, 32), "flow_landmarks": torch.zeros(1, 68, 2)})
