"""The run plan, recorded settings, model options and fold randomness (issue 11, items 6-8 and 10)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fr_mer.checkpoint import load_checkpoint, save_checkpoint
from fr_mer.config import from_record, to_record
from fr_mer.errors import ParameterError
from fr_mer.evaluation import EvalConfig, load_plan_data, plan_folds, run_evaluation, run_fold
from fr_mer.models import Recipe, create_model, model_class, validate_options
from fr_mer.randomness import fold_seed, seeded_initialisation
from fr_mer.run_plan import FoldJob, make_plan
from fr_mer.training import TrainLog
from tests.cachefactory import small_composite

RECIPE = model_class("ststnet").recipe.replace(epochs=2, batch_size=16, lr=1e-2)
ROOT = Path(__file__).resolve().parents[1]


def ststnet_plan(cache, listing, **kwargs):
    return make_plan(EvalConfig(model="ststnet", recipe=RECIPE, seeds=(0,), composite_list=str(listing),
                                **kwargs), cache)


# -- model options -------------------------------------------------------------------
def test_unknown_model_option_names_the_option_and_the_models_options():
    with pytest.raises(ParameterError, match=r"no option\(s\) dropuot.*options are .*dropout.*n_classes"):
        validate_options("ststnet", {"dropuot": 0.1})


def test_model_option_of_the_wrong_type_is_refused():
    with pytest.raises(ParameterError, match="dropout"):
        validate_options("ststnet", {"dropout": "half"})
    with pytest.raises(ParameterError, match="width"):
        create_model("micro_attention", width=2.5)


def test_model_options_are_converted_to_the_constructors_types():
    assert validate_options("ststnet", {"dropout": 1}) == {"dropout": 1.0}
    assert isinstance(validate_options("ststnet", {"dropout": 1})["dropout"], float)
    # A sequence option written on the command line as -o channels=u,v
    assert validate_options("fr", {"channels": "u,v"}) == {"channels": ("u", "v")}
    assert create_model("fr", channels="u,v").inputs == {"flow": ("u", "v")}


def test_input_size_is_recorded_in_the_checkpoint_and_rebuilt(tmp_path):
    model = create_model("smastn", width=4, segment_hidden=8)
    assert model.options()["input_size"] == 64
    path = save_checkpoint(tmp_path / "m.pt", model, fold=None, seed=0, recipe=model.recipe)
    loaded, info = load_checkpoint(path)
    assert loaded.input_size == 64 and info["options"]["input_size"] == 64
    assert info["recipe"] == to_record(model.recipe)


def test_no_model_picks_its_input_size_from_the_device():
    for name in ("micro_attention", "meranet", "smastn"):
        model = create_model(name)
        assert not hasattr(model, "resolved_input_size")
        assert model.options()["input_size"] == model.input_size


# -- recorded settings ----------------------------------------------------------------
def test_recipe_out_of_range_is_a_parameter_error_naming_the_option():
    with pytest.raises(ParameterError, match="--epochs"):
        Recipe(epochs=0)
    with pytest.raises(ParameterError, match="--batch-size"):
        Recipe().replace(batch_size=1)
    with pytest.raises(ParameterError, match="optimizer"):
        Recipe(optimizer="rmsprop")


def test_eval_config_round_trips_and_an_older_record_takes_defaults():
    config = EvalConfig(model="fr", options={"channels": ["u", "v"]}, recipe=Recipe(epochs=3), seeds=(4, 5))
    record = json.loads(json.dumps(to_record(config)))
    assert from_record(EvalConfig, record) == EvalConfig(model="fr", options={"channels": ["u", "v"]},
                                                         recipe=Recipe(epochs=3), seeds=(4, 5))
    older = {k: v for k, v in record.items() if k not in ("fold_batch", "val_fraction")}
    assert from_record(EvalConfig, older).fold_batch == 1
    with pytest.raises(ParameterError, match="config.json.*novel"):
        from_record(EvalConfig, {**record, "novel": 1}, source="config.json")


def test_eval_config_checks_its_values():
    with pytest.raises(ParameterError, match="seeds"):
        EvalConfig(model="fr", seeds=(-1, 0))
    with pytest.raises(ParameterError, match="--protocol"):
        EvalConfig(model="fr", protocol="kfold")
    with pytest.raises(ParameterError, match="--val-fraction"):
        EvalConfig(model="fr", val_fraction=1.0)


def test_train_log_is_a_recorded_setting():
    log = TrainLog(epochs=2, steps=4, seconds=2.0, final_loss=0.5, samples_seen=8)
    assert from_record(TrainLog, to_record(log)) == log and log.samples_per_second == 4.0


# -- the run plan ---------------------------------------------------------------------
def test_plan_is_resolved_before_anything_is_loaded(tmp_path):
    missing_cache = tmp_path / "not-made-yet.h5"
    plan = make_plan(EvalConfig(model="fr", options={"channels": "u,v"}, seeds=(2, 3)), missing_cache)
    assert plan.model_class is model_class("fr") and plan.options == {"channels": ("u", "v")}
    assert plan.inputs == {"flow": ("u", "v")} and plan.recipe == model_class("fr").recipe
    assert plan.seeds == (2, 3) and plan.stack == 1 and plan.cache == missing_cache.resolve()
    assert plan.config.recipe == plan.recipe  # recorded resolved
    with pytest.raises(ParameterError, match="no option"):
        make_plan(EvalConfig(model="fr", options={"nope": 1}), missing_cache)
    # Every model stacks now (fr_mer/func_stack.py); the hand-written STSTNet stack still refuses SGD.
    sgd = model_class("ststnet").recipe.replace(optimizer="sgd")
    with pytest.raises(ParameterError, match="use --fold-batch 1"):
        make_plan(EvalConfig(model="ststnet", recipe=sgd, fold_batch=0), missing_cache)
    assert not missing_cache.exists()


def test_plan_jobs_cover_seeds_by_folds_with_derived_seeds(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    plan = make_plan(EvalConfig(model="ststnet", seeds=(0, 7), composite_list=str(listing)), cache)
    folds = plan_folds(load_plan_data(plan, torch.device("cpu")))
    jobs = plan.jobs(folds)
    assert [(j.seed, j.index) for j in jobs] == [(s, i) for s in (0, 7) for i in range(3)]
    assert jobs[4].fold_seed == fold_seed(7, 1)
    assert len({j.fold_seed for j in jobs}) == len(jobs)


# -- randomness -----------------------------------------------------------------------
def test_seeded_initialisation_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded_initialisation(5):
        first = create_model("ststnet").state_dict()
    with seeded_initialisation(5):
        second = create_model("ststnet").state_dict()
    assert torch.equal(torch.rand(3), expected)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_a_fold_is_the_same_in_any_order_and_leaves_global_state_alone(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    plan = ststnet_plan(cache, listing)  # STSTNet has dropout 0.5: its stream matters
    data = load_plan_data(plan, torch.device("cpu"))
    jobs = plan.jobs(plan_folds(data))
    state = torch.random.get_rng_state()
    forward = [run_fold(plan, data, job) for job in jobs]
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(99)  # whatever the caller did with the global generator in between
    backward = [run_fold(plan, data, job) for job in reversed(jobs)][::-1]
    for a, b in zip(forward, backward):
        assert a.proba == b.proba and a.train_loss == b.train_loss


def test_a_fold_is_the_same_in_a_fresh_process(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    plan = ststnet_plan(cache, listing)
    data = load_plan_data(plan, torch.device("cpu"))
    job = plan.jobs(plan_folds(data))[2]
    here = run_fold(plan, data, job)
    script = (
        "import json, sys, torch\n"
        "from fr_mer.evaluation import EvalConfig, load_plan_data, plan_folds, run_fold\n"
        "from fr_mer.models import model_class\n"
        "from fr_mer.run_plan import make_plan\n"
        "torch.set_num_threads(1)\n"
        "recipe = model_class('ststnet').recipe.replace(epochs=2, batch_size=16, lr=1e-2)\n"
        "plan = make_plan(EvalConfig(model='ststnet', recipe=recipe, seeds=(0,), composite_list=sys.argv[2]),"
        " sys.argv[1])\n"
        "data = load_plan_data(plan, torch.device('cpu'))\n"
        "print(json.dumps(run_fold(plan, data, plan.jobs(plan_folds(data))[2]).proba))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, str(cache), str(listing)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(json.loads(done.stdout), here.proba, rtol=0, atol=1e-5)


def test_job_carries_the_fold_seed():
    from fr_mer.protocols import Fold

    fold = Fold("casme2", "sub01", np.arange(2), np.arange(2, 6))
    assert FoldJob(3, 4, fold).fold_seed == fold_seed(3, 4)


def test_resume_accepts_the_same_composite_list_by_another_path(tmp_path, monkeypatch):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    config = EvalConfig(model="ststnet", recipe=RECIPE, seeds=(0,), composite_list=str(listing))
    first = run_evaluation(cache, tmp_path / "out", config, device=torch.device("cpu"))
    monkeypatch.chdir(listing.parent)
    relative = EvalConfig(model="ststnet", recipe=RECIPE, seeds=(0,), composite_list=listing.name)
    seen = []
    again = run_evaluation(cache, tmp_path / "out", relative, device=torch.device("cpu"),
                           on_fold=lambda r, resumed: seen.append(resumed))
    assert seen == [True] * 3 and again["full"] == first["full"]
