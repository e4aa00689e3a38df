"""SMA-STN's non-local block sees a map of at least 7x7 at every supported input size."""
from __future__ import annotations

import pytest
import torch

from fr_mer.models import create_model
from fr_mer.models.smastn import NON_LOCAL_MIN_SIDE, feature_map_side, trunk_strides

#: The smallest supported size (32), the CPU default (64), the paper's (112), and sizes between and above.
SIZES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256)


@pytest.mark.parametrize("size", SIZES)
def test_non_local_block_map_is_at_least_7x7(size):
    model = create_model("smastn", input_size=size, width=4, de_weight=0.0).eval()
    seen = []
    hook = model.non_local.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        model({"dynamic_images": torch.rand(2, 4, size, size) * 20})
    hook.remove()
    side = feature_map_side(size, trunk_strides(size))
    assert seen == [(side, side)]
    assert side >= NON_LOCAL_MIN_SIDE
    # the trunk downsamples as far as the bound allows: one more stride would break it
    assert side < 2 * NON_LOCAL_MIN_SIDE or trunk_strides(size) == (1, 2, 2, 2)


def test_strides_by_hand():
    assert trunk_strides(32) == (1, 1, 1, 1)  # stem: 32 -> 8; an 8x8 map
    assert trunk_strides(64) == (1, 2, 1, 1)  # 16 -> 8
    assert trunk_strides(112) == (1, 2, 2, 1)  # 28 -> 14 -> 7
    assert trunk_strides(224) == (1, 2, 2, 2)  # 56 -> 28 -> 14 -> 7: the paper's ResNet
    assert feature_map_side(100, (1, 2, 2, 1)) == 7  # 100 -> 50 -> 25 -> 13 -> 7
