"""Inputs stay on the device in their stored dtype (uint8 faces and frames); batches are float32, same values."""
from __future__ import annotations

import numpy as np
import torch

from fr_mer.data import load_dataset
from fr_mer.models import create_model
from fr_mer.pipeline.cache import ArraySpec, CacheWriter, read_cache
from fr_mer.randomness import seeded_initialisation


def write_face_cache(path, n: int = 12):
    rng = np.random.default_rng(0)
    spec = {"flow": ArraySpec((3, 28, 28), "f4", {"channels": "u,v,strain"}),
            "apex_face": ArraySpec((32, 32), "u1", {}), "clip_frames": ArraySpec((4, 16, 16), "u1", {})}
    with CacheWriter(path, params={"test": True}, arrays=spec) as writer:
        for i in range(n):
            subject = f"sub{i % 3 + 1:02d}"
            writer.append({"key": f"casme2/{subject}/c{i}", "database": "casme2", "subject": subject,
                           "clip": f"c{i}", "emotion": "positive", "label": i % 3, "onset_frame": 1,
                           "apex_frame": 2, "offset_frame": 3},
                          {"flow": rng.normal(128, 40, (3, 28, 28)).astype(np.float32),
                           "apex_face": rng.integers(0, 256, (32, 32), dtype=np.uint8),
                           "clip_frames": rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)})
    return path


def test_uint8_columns_stay_uint8_and_batches_hold_the_same_float_values(tmp_path):
    cache = write_face_cache(tmp_path / "faces.h5")
    wanted = {"flow": ("u", "v"), "apex_face": None, "clip_frames": None}
    data = load_dataset(cache, wanted, torch.device("cpu"), protocol="loso", database="casme2")
    assert data.inputs["apex_face"].dtype == torch.uint8 and data.inputs["clip_frames"].dtype == torch.uint8
    assert data.inputs["flow"].dtype == torch.float32
    stored_cache = read_cache(cache, arrays=list(wanted))
    index = torch.tensor([5, 0, 11, 3])
    batch = data.batch(index)
    # The dataset's samples come in key order; the cache's rows of the batch's samples:
    rows = torch.tensor([stored_cache.keys.index(data.keys[i]) for i in index])
    stored = {name: np.asarray(values)[rows.numpy()] for name, values in stored_cache.arrays.items()}
    for name in ("apex_face", "clip_frames"):
        assert batch[name].dtype == torch.float32
        # What loading as float32 on the host gave before: the model sees the same numbers.
        torch.testing.assert_close(batch[name], torch.from_numpy(np.asarray(stored[name], np.float32)),
                                   rtol=0, atol=0)
    with seeded_initialisation(0):
        model = create_model("micro_attention", width=4, input_size=32).eval()
    before = {"apex_face": torch.from_numpy(np.asarray(stored["apex_face"], np.float32))}
    torch.testing.assert_close(model(batch)["logits"], model(before)["logits"], rtol=0, atol=0)
