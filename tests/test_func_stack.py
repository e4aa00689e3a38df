"""The generic stack of folds (torch.func): each stacked fold is that fold trained alone.

Reference: :func:`fr_mer.training.train_model` on each fold with its own seed,
then prediction in evaluation mode. The folds differ in size, so the last step
pads two folds and leaves one out (a one-sample batch), and the padding must
move neither batch-norm statistics nor gradients.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fr_mer.data import DeviceDataset
from fr_mer.fold_stack import train_stacked
from fr_mer.models import create_model, model_class
from fr_mer.randomness import seeded_initialisation
from fr_mer.stacked_optim import StackedAdam, StackedSGD
from fr_mer.training import predict_proba, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Small variants of every model the generic stack trains (dropout on where the model has it).
SMALL = {
    "fr": dict(branch_dim=8, dropout=0.3),
    "dual_inception": dict(hidden=16, dropout=0.2),
    "off_apexnet": dict(hidden=16),
    "meranet": dict(base_width=4, layers=(1, 1, 1, 1), input_size=16),
    "micro_attention": dict(width=4, input_size=32),
    "smastn": dict(width=4, input_size=32, segment_hidden=8),
    "htnet": dict(dim=6, heads=3, block_repeats=(1, 1, 1), mlp_mult=2),
}
#: Flow channels each model reads (htnet: STSTNet's three; the others here: u, v).
FLOW_CHANNELS = {"htnet": 3}
#: Parameters whose gradient is zero in exact arithmetic, so that Adam moves them by float noise alone
#: and no two runs agree on them: HTNet's last hierarchy adds its position embedding equally to every
#: channel, which the head's channel LayerNorm then removes (as in HTNet's public script). MERANet's
#: input BN scale feeds a bias-free conv and a BN that remove it but at the zero-padded border: its
#: gradient is about 3e-5 of its bias's, and float32 rounding changes its second digit.
NOISE_ONLY = {"htnet": {"hierarchies.2.position"}, "meranet": {"input_bn.weight"}}
SIZES = (24, 19, 17)  # batches of 8: the last ones hold 8, 3 and 1 (skipped) samples
SEEDS = (11, 12, 13)


def dataset(n: int = 24, device: str = "cpu", flow_channels: int = 2) -> DeviceDataset:
    g = torch.Generator().manual_seed(0)
    inputs = {
        "flow": torch.randint(0, 256, (n, flow_channels, 28, 28), generator=g).float(),
        "flow_landmarks": 4 + torch.rand(n, 68, 2, generator=g) * 20,
        "clip_frames": torch.randint(0, 256, (n, 4, 20, 20), generator=g).float(),
        "apex_face": torch.randint(0, 256, (n, 32, 32), generator=g).float(),
        "dynamic_images": torch.randn(n, 3, 32, 32, generator=g) * 40,
        "onset_face": torch.randint(0, 256, (n, 32, 32), generator=g).float(),
    }
    return DeviceDataset(inputs={k: v.to(device) for k, v in inputs.items()},
                         labels=(torch.arange(n) % 3).to(device), keys=[str(i) for i in range(n)],
                         databases=np.array(["casme2"] * n), subjects=np.array(["sub01"] * n),
                         cache=None, missing=[])


def fold_models(name: str) -> list:
    models = []
    for seed in SEEDS:
        with seeded_initialisation(seed):
            models.append(create_model(name, **SMALL[name]))
    return models


def check_stack_equals_folds_alone(name: str, device: str, epochs: int = 1) -> None:
    data = dataset(device=device, flow_channels=FLOW_CHANNELS.get(name, 2))
    recipe = model_class(name).recipe.replace(epochs=epochs, batch_size=8)
    indices = [np.arange(size) if f != 2 else np.arange(24 - size, 24) for f, size in enumerate(SIZES)]
    alone, stacked = fold_models(name), fold_models(name)
    for model, rows, seed in zip(alone, indices, SEEDS):
        train_model(model, data, torch.as_tensor(rows), recipe, seed=seed)
    logs = train_stacked(stacked, data, indices, recipe, seed=0, fold_seeds=SEEDS)
    assert [log.steps for log in logs] == [3 * epochs, 3 * epochs, 2 * epochs]
    assert [log.samples_seen for log in logs] == [24 * epochs, 19 * epochs, 16 * epochs]
    everything = torch.arange(len(data))
    # Adam moves a weight whose gradient is float noise by about lr either way, so weights are
    # compared on average, against how far training moved them; predictions elementwise.
    for f, (reference, trained, initial) in enumerate(zip(alone, stacked, fold_models(name))):
        want, got, start = reference.state_dict(), trained.state_dict(), initial.state_dict()
        for key, value in want.items():
            if key in NOISE_ONLY.get(name, ()):
                continue
            moved = (value.float() - start[key].float().to(value.device)).abs().mean().item()
            error = (got[key].float() - value.float()).abs().mean().item()
            assert error <= 1e-2 * moved + 1e-7, f"fold {f} {key}: off by {error}, moved {moved}"
        torch.testing.assert_close(predict_proba(trained, data, everything),
                                   predict_proba(reference, data, everything), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_stacked_fold_trains_as_that_fold_alone(name):
    check_stack_equals_folds_alone(name, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_stacked_fold_trains_as_that_fold_alone_on_cuda(name):
    check_stack_equals_folds_alone(name, "cuda")


def test_every_registered_model_can_be_stacked():
    from fr_mer.fold_stack import check_stackable
    from fr_mer.models import list_models

    for name in list_models():
        cls = model_class(name)
        check_stackable(cls, cls.recipe if cls.stacked is None else cls.recipe.replace(augment=False))
    assert set(SMALL) | {"ststnet"} == set(list_models())


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_stacked_optimisers_step_each_fold_as_torch_does(optimizer):
    """Three folds, three steps; fold 1 sits the second step out (no batch)."""
    g = torch.Generator().manual_seed(1)
    start = torch.randn(3, 4, 5, generator=g)
    grads = torch.randn(3, 3, 4, 5, generator=g)
    active = torch.tensor([[True, True, True], [True, False, True], [True, True, True]])
    stacked = start.clone().requires_grad_()
    if optimizer == "sgd":
        stack = StackedSGD([stacked], 3, lr=0.1, momentum=0.9, weight_decay=1e-2)
    else:
        stack = StackedAdam([stacked], 3, lr=0.1, weight_decay=1e-2, decoupled=optimizer == "adamw")
    alone = [start[f].clone().requires_grad_() for f in range(3)]
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    torch_optimizers = [torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-2) if optimizer == "sgd"
                        else kinds[optimizer]([p], lr=0.1, weight_decay=1e-2) for p in alone]
    for step in range(3):
        stacked.grad = grads[step].clone()
        stack.step(active[step])
        for f in range(3):
            if active[step, f]:
                alone[f].grad = grads[step, f].clone()
                torch_optimizers[f].step()
    for f in range(3):
        torch.testing.assert_close(stacked[f].detach(), alone[f].detach(), rtol=1e-4, atol=1e-5)


def test_stacked_evaluation_equals_fold_by_fold(tmp_path):
    """--fold-batch 0 of a generic model gives fold by fold's predictions: the same streams per fold."""
    from fr_mer.evaluation import EvalConfig, run_evaluation
    from tests.cachefactory import small_composite

    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    recipe = model_class("fr").recipe.replace(epochs=2, batch_size=8)
    probabilities = []
    for fold_batch in (1, 0):
        config = EvalConfig(model="fr", options={"branch_dim": 8}, recipe=recipe, seeds=(0,),
                            composite_list=str(listing), fold_batch=fold_batch)
        run_evaluation(cache, tmp_path / f"b{fold_batch}", config, device=torch.device("cpu"))
        rows = (tmp_path / f"b{fold_batch}" / "predictions.csv").read_text().splitlines()
        probabilities.append(rows)
    assert len(probabilities[0]) == len(probabilities[1]) > 1
    for alone, stacked in zip(*probabilities):
        a, b = alone.split(","), stacked.split(",")
        assert a[:3] == b[:3]
        for x, y in zip(a[3:], b[3:]):
            try:
                assert abs(float(x) - float(y)) <= 1e-3
            except ValueError:
                assert x == y


def test_fold_batch_defaults_to_all_folds_on_cuda_and_one_on_the_cpu(tmp_path):
    from fr_mer.results_folder import recorded_fold_batch
    from fr_mer.run_plan import default_fold_batch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device name; nothing runs on it
    assert default_fold_batch("fr", None, cpu) == 1
    assert [default_fold_batch(name, None, cuda) for name in ("fr", "smastn", "ststnet")] == [0, 0, 0]
    sgd = model_class("ststnet").recipe.replace(optimizer="sgd")  # beyond the hand-written stack
    assert default_fold_batch("ststnet", sgd, cuda) == 1
    # A resumed run keeps what it recorded, whichever the device now.
    (tmp_path / "config.json").write_text('{"config": {"model": "fr", "fold_batch": 1}, "cache": "c.h5"}')
    assert default_fold_batch("fr", None, cuda, recorded_fold_batch(tmp_path)) == 1
    (tmp_path / "config.json").write_text('{"config": {"model": "fr", "fold_batch": 0}, "cache": "c.h5"}')
    assert default_fold_batch("fr", None, cpu, recorded_fold_batch(tmp_path)) == 0
    assert recorded_fold_batch(tmp_path / "new") is None
    (tmp_path / "config.json").write_text('{"config": {"model": "fr", "fold_batch": true}}')
    assert recorded_fold_batch(tmp_path) is None  # damaged: the results folder's own check names it
