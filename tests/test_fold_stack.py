"""Folds trained as one stacked model: the same function, the same gradients, the same Adam steps.

The reference is each fold's own STSTNet, trained alone with torch.optim.Adam
on the same batches: a stack of F folds must move every fold's parameters
exactly as its own training would, including folds whose batches are shorter
(padding) or empty (no step).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fr_mer.data import DeviceDataset, load_dataset
from fr_mer.evaluation import EvalConfig, EvaluationError, run_evaluation
from fr_mer.fold_stack import StackedAdam, check_stackable, stacked_step, train_stacked
from fr_mer.models import create_model, model_class
from fr_mer.training import predict_proba
from tests.cachefactory import small_composite


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_dataset(n: int = 40, seed: int = 0) -> DeviceDataset:
    g = torch.Generator().manual_seed(seed)
    flow = torch.randint(0, 256, (n, 3, 28, 28), generator=g).float()
    labels = torch.arange(n) % 3
    return DeviceDataset(inputs={"flow": flow}, labels=labels, keys=[str(i) for i in range(n)],
                         databases=np.array(["casme2"] * n), subjects=np.array(["sub01"] * n),
                         cache=None, missing=[])


def fold_models(n_folds: int, dropout: float = 0.0) -> list:
    models = []
    for f in range(n_folds):
        torch.manual_seed(100 + f)
        model = create_model("ststnet", dropout=dropout)
        with torch.no_grad():  # distinct, non-trivial batch-norm state per fold
            model.bn.weight.uniform_(0.5, 1.5)
            model.bn.running_mean.uniform_(0, 50)
            model.bn.running_var.uniform_(100, 2000)
        models.append(model)
    return models


@pytest.mark.parametrize("fused", [True, False])
def test_stack_computes_each_folds_network_in_both_modes(fused):
    data = random_dataset()
    models = fold_models(3)
    with torch.no_grad():
        models[1].bn.weight[[2, 9]] = torch.tensor([-0.8, -1.3])  # min-pooling channels
    stacked = model_class("ststnet").stacked(models)
    stacked.fused = fused
    rows = torch.arange(24).view(8, 3)  # (B, F): fold f sees rows[:, f]
    batch = {"flow": data.inputs["flow"][rows]}
    for train in (False, True):
        stacked.train(train)
        for m in models:
            m.train(train)
        out = stacked(batch)
        for f, model in enumerate(models):
            expected = model({"flow": data.inputs["flow"][rows[:, f]]})["logits"]
            torch.testing.assert_close(out[:, f], expected, rtol=1e-4, atol=1e-4)
    # Training mode updated every fold's running statistics as its own network did.
    for f, model in enumerate(models):
        torch.testing.assert_close(stacked.running_mean[f], model.bn.running_mean, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(stacked.running_var[f], model.bn.running_var, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("fused", [True, False])
def test_stacked_adam_steps_equal_each_fold_trained_alone(fused):
    """Three steps; fold 1's batches are shorter (padded), fold 2 sits the last step out."""
    data = random_dataset(60)
    models = fold_models(3)
    alone = fold_models(3)
    stacked = model_class("ststnet").stacked(models).train()
    stacked.fused = fused
    optimizer = StackedAdam(list(stacked.parameters()), 3, lr=1e-2)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in alone]
    g = torch.Generator().manual_seed(5)
    for counts in ([8, 5, 8], [8, 8, 6], [7, 8, 1]):
        index = torch.stack([torch.randperm(60, generator=g)[:8] for _ in range(3)])
        losses = stacked_step(stacked, optimizer, data, index, torch.tensor(counts))
        for f, (model, opt) in enumerate(zip(alone, optimizers)):
            if counts[f] < 2:
                assert losses[f] == 0
                continue
            rows = index[f, :counts[f]]
            model.train()
            loss = F.cross_entropy(model({"flow": data.inputs["flow"][rows]})["logits"], data.labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            torch.testing.assert_close(losses[f], loss.detach(), rtol=1e-5, atol=1e-5)
    stacked.unstack()
    for f in range(3):
        trained, reference = models[f].state_dict(), alone[f].state_dict()
        for key in reference:
            torch.testing.assert_close(trained[key].float(), reference[key].float(), rtol=1e-4, atol=1e-5,
                                       msg=lambda m, key=key, f=f: f"fold {f} {key}: {m}")
    assert [int(m.bn.num_batches_tracked) for m in models] == [3, 3, 2]


def test_masked_fused_pass_matches_autograd_with_padding_and_negative_slopes():
    """Values, gradients and running statistics of the fused pass against the plain stack."""
    g = torch.Generator().manual_seed(3)
    models = fold_models(4)
    with torch.no_grad():
        models[0].bn.weight[[1, 4]] = torch.tensor([-0.5, -2.0])
        models[3].bn.weight[7] = -1.1
    plain = model_class("ststnet").stacked(fold_models(4)).train()
    plain.load_state_dict(model_class("ststnet").stacked(models).state_dict())
    plain.fused = False
    fused = model_class("ststnet").stacked(models).train()
    flow = torch.randint(0, 256, (10, 4, 3, 28, 28), generator=g).float()
    flow[:, :, :, :5, :5] = 0.0  # ties inside pooling windows
    mask = torch.ones(10, 4, dtype=torch.bool)
    mask[6:, 1] = False
    mask[3:, 2] = False
    outputs = []
    for module in (plain, fused):
        module.dropout = 0.0
        logits = module({"flow": flow}, mask)
        (logits.square() * mask.unsqueeze(-1)).sum().backward()
        outputs.append(logits * mask.unsqueeze(-1))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
    for (name, a), (_, b) in zip(plain.named_parameters(), fused.named_parameters()):
        scale = a.grad.abs().max()
        assert (b.grad - a.grad).abs().max() <= 1e-4 * scale, name
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused, name), getattr(plain, name), rtol=1e-5, atol=1e-4)


def test_stacked_training_learns_separable_folds(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1, clips_per_class=3)
    data = load_dataset(cache, {"flow": ("strain", "v", "u")}, torch.device("cpu"), composite_list=listing)
    n = len(data)
    indices = [np.arange(n), np.arange(0, n - 7)]  # folds of different sizes
    models = []
    for f in range(2):
        torch.manual_seed(f)
        models.append(create_model("ststnet"))
    recipe = model_class("ststnet").recipe.replace(epochs=40, batch_size=16, lr=1e-2)
    torch.manual_seed(9)
    logs = train_stacked(models, data, indices, recipe, seed=9)
    for model, rows, log in zip(models, indices, logs):
        accuracy = (predict_proba(model, data, torch.as_tensor(rows)).argmax(1) == data.labels[rows]).float().mean()
        assert accuracy >= 0.9
        assert log.steps == 40 * -(-len(rows) // 16) and log.samples_seen == 40 * len(rows)
        assert log.final_loss < 1.0


def test_recipes_the_hand_written_stack_cannot_train_are_refused():
    check_stackable(model_class("fr"), model_class("fr").recipe)  # the generic stack takes any model
    with pytest.raises(ValueError, match="Adam"):
        check_stackable(model_class("ststnet"), model_class("ststnet").recipe.replace(optimizer="sgd"))
    with pytest.raises(ValueError, match="class-balanced"):
        check_stackable(model_class("ststnet"), model_class("ststnet").recipe.replace(class_balanced=True))


def evaluate(cache, listing, out, **kwargs):
    recipe = model_class("ststnet").recipe.replace(epochs=3, batch_size=16, lr=1e-2)
    config = EvalConfig(model="ststnet", recipe=recipe, seeds=(0,), composite_list=str(listing), **kwargs)
    return run_evaluation(cache, out, config, device=torch.device("cpu"))


def test_stacked_evaluation_writes_every_fold_and_resumes(tmp_path):
    cache, listing = small_composite(tmp_path)
    metrics = evaluate(cache, listing, tmp_path / "all", fold_batch=0)
    assert metrics["n_folds"] == 9
    folds = sorted((tmp_path / "all" / "folds" / "seed0").glob("*.json"))
    assert len(folds) == 9
    # Chunks of 4: remove two folds of the last chunk; the rerun trains those two only.
    evaluate(cache, listing, tmp_path / "chunks", fold_batch=4)
    written = sorted((tmp_path / "chunks" / "folds" / "seed0").glob("*.json"))
    kept = {p.name: p.stat().st_mtime_ns for p in written[:-2]}
    for path in written[-2:]:
        path.unlink()
    evaluate(cache, listing, tmp_path / "chunks", fold_batch=4)
    again = sorted((tmp_path / "chunks" / "folds" / "seed0").glob("*.json"))
    assert [p.name for p in again] == [p.name for p in written]
    assert all(p.stat().st_mtime_ns == kept[p.name] for p in again if p.name in kept)
    with pytest.raises(EvaluationError, match="other settings"):
        evaluate(cache, listing, tmp_path / "chunks", fold_batch=1)


def test_fold_batch_with_a_recipe_no_stack_can_train_is_a_clear_error(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    recipe = model_class("ststnet").recipe.replace(optimizer="sgd")
    config = EvalConfig(model="ststnet", recipe=recipe, seeds=(0,), composite_list=str(listing), fold_batch=0)
    with pytest.raises(ValueError, match="--fold-batch 1"):
        run_evaluation(cache, tmp_path / "out", config, device=torch.device("cpu"))
    assert not (tmp_path / "out" / "config.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stack_on_cuda_matches_the_cpu():
    data = random_dataset()
    models = fold_models(4)
    rows = torch.arange(32).view(8, 4)
    stacked = model_class("ststnet").stacked(models).train()
    expected = stacked({"flow": data.inputs["flow"][rows]})
    cuda_models = fold_models(4)
    on_cuda = model_class("ststnet").stacked(cuda_models).cuda().train()
    got = on_cuda({"flow": data.inputs["flow"][rows].cuda()})
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-3, atol=1e-3)


def test_cli_fold_batch_runs_the_generic_and_the_hand_written_stack(tmp_path):
    from click.testing import CliRunner

    from fr_mer.cli import main

    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    common = ["evaluate", "--cache", str(cache), "--composite-list", str(listing), "--seeds", "1",
              "--epochs", "2", "--batch-size", "8", "--fold-batch", "0", "--threads", "1"]
    result = CliRunner().invoke(main, common + ["--model", "fr", "-o", "branch_dim=8", "--out", str(tmp_path / "fr")])
    assert result.exit_code == 0, result.output
    assert "3 folds trained" in result.output
    result = CliRunner().invoke(main, common + ["--model", "ststnet", "--out", str(tmp_path / "st")])
    assert result.exit_code == 0, result.output
    assert "3 folds trained" in result.output
