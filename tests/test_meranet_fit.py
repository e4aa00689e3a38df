"""MERANet learns motion, judged in evaluation mode (docs/models.md, MERANet; issue 24).

On grey levels MERANet learned the subjects' faces and not their motion: the amplitude-6
synthetic composite stayed at chance (UF1 0.3056) and a one-split diagnostic reached 0.86
training accuracy with batch statistics but 0.47 in evaluation mode
(benchmarks/results/models/meranet_fit_diagnostic.log). Its input is now each frame's change
from the onset frame. The clips below are that problem in miniature: every "subject" (a smooth
random face) has one clip of each class, so the face says nothing about the class, and only a
small blob's direction of movement does.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fr_mer.data import DeviceDataset
from fr_mer.errors import ParameterError
from fr_mer.models import Recipe, create_model
from fr_mer.randomness import seeded_initialisation
from fr_mer.training import predict_proba, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"base_width": 4, "layers": (1, 1, 1, 1), "input_size": 16, "dropout": 0.0}
#: The blob's direction (rows, columns) per class: right, left, down.
DIRECTIONS = ((0, 1), (0, -1), (1, 0))


def moving_blob_clips(subjects: int, frames: int = 4, size: int = 16, seed: int = 0) -> DeviceDataset:
    """One clip per (subject, class): the subject's face (grey levels 0..200, smooth) plus a blob of
    40 grey levels that moves 4 px from the centre in the class's direction, onset to offset."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centre = (size - 1) / 2
    faces = F.interpolate(torch.rand(subjects, 1, 4, 4, generator=g) * 200, size=(size, size),
                          mode="bilinear", align_corners=True)[:, 0]
    clips, labels, subject_ids = [], [], []
    for label, (down, right) in enumerate(DIRECTIONS):
        for s, face in enumerate(faces):
            shifts = [4 * t / (frames - 1) for t in range(frames)]
            blobs = [40 * torch.exp(-((rows - centre - down * d) ** 2 + (cols - centre - right * d) ** 2) / 4)
                     for d in shifts]
            clips.append(face + torch.stack(blobs))
            labels.append(label)
            subject_ids.append(f"sub{s + 1:02d}")
    n = len(labels)
    return DeviceDataset(inputs={"clip_frames": torch.stack(clips).clamp(0, 255)}, labels=torch.tensor(labels),
                         keys=[str(i) for i in range(n)], databases=np.array(["casme2"] * n),
                         subjects=np.array(subject_ids), cache=None, missing=[])


def test_meranet_fits_moving_blobs_in_evaluation_mode():
    data = moving_blob_clips(subjects=4)
    every = torch.arange(len(data))
    with seeded_initialisation(0):
        model = create_model("meranet", **TINY)
    # fr-mer's training loop: batches of 6 with batch statistics, running statistics updated as it goes.
    recipe = Recipe(epochs=40, batch_size=6, lr=3e-3, optimizer="adam", min_steps=0)
    log = train_model(model, data, every, recipe, seed=0)
    assert log.steps == 80
    predicted = predict_proba(model, data, every).argmax(1)  # evaluation mode: running statistics
    assert not model.training
    assert predicted.tolist() == data.labels.tolist(), f"final loss {log.final_loss:.3f}"


def test_onset_difference_input_is_the_change_from_the_onset_frame():
    model = create_model("meranet", **TINY).eval()
    assert model.clip_input == "onset_difference" and model.options()["clip_input"] == "onset_difference"
    clip = torch.rand(2, 5, 16, 16) * 255
    seen = model.network_input(clip)
    prepared = model.prepare(clip)
    torch.testing.assert_close(seen, prepared - prepared[:, :, :1])
    assert seen[:, :, 0].abs().max() == 0
    # A brighter face or another subject's still face changes nothing the network sees.
    torch.testing.assert_close(model.network_input(clip + 30.0), seen, atol=1e-4, rtol=0)
    still = clip[:1, :1].expand(1, 5, 16, 16)
    assert model.network_input(still).abs().max() == 0
    grey = create_model("meranet", clip_input="grey_levels", **TINY).eval()
    torch.testing.assert_close(grey.network_input(clip), grey.prepare(clip))


def test_clip_input_is_checked():
    with pytest.raises(ParameterError, match="clip_input must be one of onset_difference, grey_levels"):
        create_model("meranet", clip_input="optical_flow", **TINY)
