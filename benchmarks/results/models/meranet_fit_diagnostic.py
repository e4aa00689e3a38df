"""Why MERANet did not learn: one split of the amplitude-6 synthetic composite (docs/benchmarks-models.md, 1).

Usage: python meranet_fit_diagnostic.py CACHE (the cache ``synthetic_runs.sh 6`` made; its composite
list, synthetic_3class_gt.csv, beside it). Trains on all subjects but sub01, 006 and s01 (36 clips;
18 held out) with fr-mer's own training loop (:func:`fr_mer.training.train_model`), one thread, and
prints every 10 epochs the training accuracy in evaluation mode and with batch statistics (the 36
training clips as one batch), the held-out accuracy, and the same two accuracies after "precise BN"
(every batch norm's statistics recomputed over the training clips, batches of 16, with the weights
fixed). Variants: the candidate causes of the issue on the old input (grey levels: longer training,
zero-initialised last BN of each residual branch, BN momentum 0.01) against the onset-difference
input, at the old diagnostic's settings (32 px, Adam 1e-3 constant, batch 16, no dropout, no
augmentation), then both inputs under MERANet's recipe (56 px, dropout 0.5, augmentation,
class-balanced batches, 40 epochs with the lr x0.1 after 20). Output of the run cited:
meranet_fit_diagnostic.log.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fr_mer.data import load_dataset
from fr_mer.models import create_model, model_class
from fr_mer.randomness import seeded_initialisation
from fr_mer.training import train_model

HELD_OUT = ["sub01", "006", "s01"]
PLAIN = dict(model={"input_size": 32, "dropout": 0.0},
             recipe=dict(epochs=60, lr_step_epochs=0, class_balanced=False, augment=False, min_steps=0))
RECIPE = dict(model={}, recipe=dict(epochs=40, min_steps=0))  # MERANet's own recipe, its 40 epochs as written
VARIANTS = [  # (name, clip_input, settings, epochs or None, what to change in the built model)
    ("grey levels (the old input)", "grey_levels", PLAIN, None, None),
    ("grey levels, 200 epochs (600 steps)", "grey_levels", PLAIN, 200, None),
    ("grey levels, zero-init last BN of each branch", "grey_levels", PLAIN, None, "zero_init"),
    ("grey levels, BN momentum 0.01", "grey_levels", PLAIN, None, "momentum"),
    ("onset difference (the fix)", "onset_difference", PLAIN, None, None),
    ("grey levels, MERANet's recipe at 56 px", "grey_levels", RECIPE, None, None),
    ("onset difference, MERANet's recipe at 56 px", "onset_difference", RECIPE, None, None),
]


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def accuracy(model, data, index, eval_mode: bool) -> float:
    model.train(not eval_mode)
    predicted = model(data.batch(index))["logits"].argmax(1)
    return (predicted == data.labels[index]).float().mean().item()


@torch.no_grad()
def with_precise_bn(model, data, train, test) -> tuple[float, float]:
    """Training and held-out accuracy in evaluation mode after recomputing every BN's statistics; restored after."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    norms = batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    for chunk in train.split(16):
        model(data.batch(chunk))
    result = accuracy(model, data, train, True), accuracy(model, data, test, True)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.load_state_dict(saved)
    return result


def run(data, train, test, name, clip_input, settings, epochs, change) -> None:
    with seeded_initialisation(0):
        model = create_model("meranet", clip_input=clip_input, **settings["model"])
    if change == "zero_init":
        for block in model.stages.modules():
            if hasattr(block, "bn2"):
                nn.init.zeros_(block.bn2.weight)
    elif change == "momentum":
        for m in batch_norms(model):
            m.momentum = 0.01
    recipe = model_class("meranet").recipe.replace(**settings["recipe"])
    if epochs is not None:
        recipe = recipe.replace(epochs=epochs, min_steps=0)
    print(f"== {name}: {recipe.epochs} epochs of batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr} "
          f"(x{recipe.lr_gamma} every {recipe.lr_step_epochs} epochs; 0: constant), "
          f"class-balanced {recipe.class_balanced}, augmentation {recipe.augment}, {model.options()}", flush=True)
    start = time.process_time()
    every = 25 if recipe.epochs > 100 else 10

    def report(epoch: int, loss: float) -> None:
        if (epoch + 1) % every:
            return
        seconds = time.process_time() - start
        batch_stats = accuracy(model, data, train, False)
        train_eval, test_eval = accuracy(model, data, train, True), accuracy(model, data, test, True)
        precise_train, precise_test = with_precise_bn(model, data, train, test)
        model.train()
        print(f"epoch {epoch + 1:3d} loss {loss:.3f} | train: batch stats {batch_stats:.2f}, eval mode "
              f"{train_eval:.2f}, precise BN {precise_train:.2f} | held out: eval mode {test_eval:.2f}, "
              f"precise BN {precise_test:.2f} | cpu {seconds:.0f} s", flush=True)

    log = train_model(model, data, train, recipe, seed=0, on_epoch=report)
    print(f"{log.steps} steps", flush=True)


def main(cache_path: str) -> None:
    torch.set_num_threads(1)
    cache = Path(cache_path)
    data = load_dataset(cache, model_class("meranet").inputs, torch.device("cpu"),
                        composite_list=cache.parent / "synthetic_3class_gt.csv")
    held_out = np.isin(data.subjects, HELD_OUT)
    train = torch.from_numpy(np.nonzero(~held_out)[0])
    test = torch.from_numpy(np.nonzero(held_out)[0])
    print(f"{len(train)} training clips, {len(test)} held out ({', '.join(HELD_OUT)}); "
          f"clips {tuple(data.inputs['clip_frames'].shape[1:])}", flush=True)
    for variant in VARIANTS:
        run(data, train, test, *variant)


if __name__ == "__main__":
    main(sys.argv[1])
