"""The recipe rule that trains at any size (Recipe.min_steps, docs/models.md "Recipes")."""
import pytest
from torch.optim.optimizer import register_optimizer_step_post_hook
import torch

from fr_mer.data import load_dataset
from fr_mer.errors import ParameterError
from fr_mer.models import Recipe, create_model, model_class
from fr_mer.models.base import COMPOSITE_FOLD_TRAIN_SAMPLES, batches_per_epoch
from fr_mer.models.inception import INCEPTION_RECIPE
from fr_mer.pipeline.labels import CLASSES
from fr_mer.training import train_model
from tests.cachefactory import write_flow_cache


def sixty_sample_cache(tmp_path):
    rows = [("casme2", f"sub{s + 1:02d}", f"EP{s:02d}_{label[:2]}", label) for s in range(20) for label in CLASSES]
    return write_flow_cache(tmp_path / "sixty.h5", rows)


class StepCounter:
    """Counts every optimiser step taken while it is open (torch's global step hook)."""

    def __enter__(self):
        self.steps = 0

        def count(optimizer, args, kwargs):
            self.steps += 1

        self.handle = register_optimizer_step_post_hook(count)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_batches_per_epoch_skips_a_one_sample_batch():
    assert batches_per_epoch(436, 128) == 4
    assert batches_per_epoch(129, 128) == 1  # the leftover sample takes no step
    assert batches_per_epoch(130, 128) == 2
    assert batches_per_epoch(60, 128) == 1


def test_the_rule_leaves_a_composite_fold_unchanged():
    assert INCEPTION_RECIPE.min_steps == 80  # 20 epochs x 4 batches of 128 on 436 samples
    for n_train in (COMPOSITE_FOLD_TRAIN_SAMPLES, 422, 441):
        assert INCEPTION_RECIPE.for_training_size(n_train) == INCEPTION_RECIPE
    for name in ("fr", "dual_inception", "ststnet", "off_apexnet", "micro_attention", "meranet", "smastn"):
        recipe = model_class(name).recipe
        assert recipe.for_training_size(COMPOSITE_FOLD_TRAIN_SAMPLES) == recipe


def test_a_small_training_set_gets_the_minimum_steps_and_a_scaled_schedule():
    recipe = Recipe(epochs=20, batch_size=128, lr_step_epochs=5)
    small = recipe.for_training_size(110)
    assert small.epochs == 80 and small.lr_step_epochs == 20  # one batch an epoch: 4x the epochs
    assert small.epochs * batches_per_epoch(110, 128) >= recipe.min_steps
    # The smallest integer factor: 3 batches an epoch need ceil(80 / 60) = 2x.
    assert recipe.for_training_size(300).epochs == 40


def test_explicit_epochs_turn_the_rule_off_and_a_batch_change_keeps_it():
    recipe = model_class("fr").recipe
    assert recipe.replace(epochs=3).min_steps == 0
    assert recipe.replace(epochs=3).for_training_size(60).epochs == 3
    assert recipe.replace(epochs=3, min_steps=50).min_steps == 50
    assert recipe.replace(batch_size=32).min_steps == 80
    with pytest.raises(ParameterError, match="min_steps"):
        Recipe(min_steps=-1)


def test_a_recipe_on_a_60_sample_cache_takes_at_least_its_minimum_steps(tmp_path):
    data = load_dataset(sixty_sample_cache(tmp_path), {"flow": ("u", "v", "strain")}, torch.device("cpu"),
                        protocol="loso", database="casme2")
    assert len(data) == 60
    recipe = INCEPTION_RECIPE  # FR's and dual_inception's: 20 epochs, one batch of 60 -> 20 steps unscaled
    assert recipe.epochs * batches_per_epoch(len(data), recipe.batch_size) < recipe.min_steps
    torch.manual_seed(0)
    model = create_model("ststnet")  # the recipe is under test, not the network: the smallest one
    with StepCounter() as counter:
        log = train_model(model, data, torch.arange(len(data)), recipe, seed=0)
    assert counter.steps >= recipe.min_steps == 80
    assert log.steps == counter.steps and log.epochs == 80
