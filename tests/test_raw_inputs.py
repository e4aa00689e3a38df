"""Raw-pixel flow as model input: the per-channel scale fitted on the training rows (fr_mer.models.flow_input).

A raw cache (``--normalisation none``) stores u and v in pixels; every flow model's
``normalise="auto"`` divides each channel by its root mean square over the training
rows and pixels, a buffer saved with the model. On a minmax255 cache ``auto`` is the
model's 0..255 mapping, exactly as before.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fr_mer.checkpoint import load_checkpoint, save_checkpoint
from fr_mer.data import DeviceDataset, flow_normalisation, load_dataset
from fr_mer.errors import ParameterError
from fr_mer.evaluation import EvalConfig, plan_folds, run_evaluation
from fr_mer.fold_stack import train_stacked
from fr_mer.models import create_model, model_class
from fr_mer.models.flow_input import FlowInputModel, flip_flow
from fr_mer.pipeline.cache import ArraySpec, CacheParamsError, CacheWriter, read_cache
from fr_mer.pipeline.labels import CLASS_INDEX, CLASSES, sample_key
from fr_mer.randomness import seeded_initialisation
from fr_mer.training import predict_proba, train_model
from fr_mer.pipeline.preprocess import PreprocessParams
from fr_mer.pipeline.preprocess.run import PreprocessRun
from tests.cachefactory import small_composite

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Small variants of every model that reads the flow column.
SMALL = {
    "fr": dict(branch_dim=8),
    "dual_inception": dict(hidden=64),
    "off_apexnet": dict(hidden=16),
    "ststnet": dict(),
    "htnet": dict(dim=12, heads=3, block_repeats=(1, 1, 1), mlp_mult=2),
}


def test_every_model_that_reads_flow_has_the_fitted_input_normalisation():
    from fr_mer.models import list_models

    readers = {name for name in list_models() if "flow" in model_class(name).inputs}
    assert readers == set(SMALL)
    for name in readers:
        assert issubclass(model_class(name), FlowInputModel)
        assert create_model(name, **SMALL[name]).normalise == "auto"


def hand_made_cache(path, flows: np.ndarray, normalisation: str | None) -> str:
    """One casme2 sample per row of ``flows`` (N, 3, 4, 4), subject i // 2, classes in turn."""
    spec = {"flow": ArraySpec(flows.shape[1:], "f4", {"channels": "u,v,strain"})}
    params = {"test": True} if normalisation is None else {"test": True, "normalisation": normalisation}
    with CacheWriter(path, params=params, arrays=spec) as writer:
        for i, flow in enumerate(flows):
            subject, clip, label = f"sub{i // 2 + 1:02d}", f"c{i}", CLASSES[i % 3]
            writer.append({"key": sample_key("casme2", subject, clip), "database": "casme2", "subject": subject,
                           "clip": clip, "emotion": label, "label": CLASS_INDEX[label], "onset_frame": 1,
                           "apex_frame": 2, "offset_frame": 3, "objective_class": None}, {"flow": flow})
    return path


def test_the_fitted_scale_is_the_rms_of_the_training_rows_only(tmp_path):
    rng = np.random.default_rng(3)
    flows = rng.normal(size=(6, 3, 4, 4)).astype(np.float32) * np.array([2.0, 0.5, 0.1], np.float32)[:, None, None]
    flows[5] *= 100  # a held-out row that would move every channel's scale
    cache = hand_made_cache(tmp_path / "raw.h5", flows, "none")
    data = load_dataset(cache, {"flow": ("v", "u")}, torch.device("cpu"), protocol="loso", database="casme2")
    assert data.flow_normalisation == "none"
    stored = read_cache(cache, arrays=["flow"])
    assert list(data.keys) == list(stored.keys)  # the dataset's rows are the cache's
    rows = np.array([0, 1, 2, 3])
    model = create_model("dual_inception", hidden=4, channels=("v", "u"))
    model.fit_inputs(data, torch.as_tensor(rows))
    picked = stored.arrays["flow"][rows][:, [1, 0]].astype(np.float64)  # the model reads (v, u)
    expected = np.sqrt((picked ** 2).mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(model.input_scale.numpy(), expected, rtol=1e-6)
    everything = np.sqrt((stored.arrays["flow"][:, [1, 0]].astype(np.float64) ** 2).mean(axis=(0, 2, 3)))
    assert not np.allclose(model.input_scale.numpy(), everything, rtol=0.1)
    assert model.normalise == "scale" and model.options()["normalise"] == "scale"
    assert model.input_record() == {"normalise": "scale", "input_scale": model.input_scale.tolist()}
    # The network reads each channel divided by its scale.
    batch = data.batch(torch.arange(len(data)))
    torch.testing.assert_close(model.normalise_flow(batch["flow"]),
                               batch["flow"] / torch.as_tensor(expected, dtype=torch.float32).view(2, 1, 1))


def test_the_cache_says_how_its_flow_is_stored(tmp_path):
    flows = np.ones((2, 3, 4, 4), np.float32)
    assert flow_normalisation(read_cache(hand_made_cache(tmp_path / "old.h5", flows, None))) == "minmax255"
    assert flow_normalisation(read_cache(hand_made_cache(tmp_path / "raw.h5", flows, "none"))) == "none"
    assert flow_normalisation(read_cache(hand_made_cache(tmp_path / "mm.h5", flows, "minmax255"))) == "minmax255"
    with pytest.raises(ValueError, match="zscore"):
        flow_normalisation(read_cache(hand_made_cache(tmp_path / "odd.h5", flows, "zscore")))


def test_mirroring_raw_flow_negates_u_exactly():
    g = torch.Generator().manual_seed(2)
    flow = torch.randn(5, 3, 6, 6, generator=g)  # (v, u, strain), raw
    flipped = flip_flow(flow, ("v", "u", "strain"), torch.Generator().manual_seed(0), p=1.0, raw=True)
    assert torch.equal(flipped[:, 1], -flow[:, 1].flip(-1))
    assert torch.equal(flipped[:, 0], flow[:, 0].flip(-1)) and torch.equal(flipped[:, 2], flow[:, 2].flip(-1))
    model = create_model("fr", branch_dim=4, normalise="scale")  # as fitted on a raw cache
    out = model.augment({"flow": flow[:, :2]}, torch.Generator().manual_seed(0))["flow"]
    mirrored = torch.tensor([not torch.equal(out[i], flow[i, :2]) for i in range(5)])
    assert mirrored.any()
    assert torch.equal(out[mirrored][:, 0], -flow[mirrored][:, 0].flip(-1))  # u is fr's channel 0 here


def memory_dataset(normalisation: str, channels: int, n: int = 36) -> DeviceDataset:
    """Three classes, each its own flow pattern plus noise: raw (a few px around 0) or as 0..255 images."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    patterns = torch.randn(3, channels, 28, 28, generator=g)
    flow = (2 * patterns[labels] + torch.randn(n, channels, 28, 28, generator=g)) * 0.5
    flow = flow * torch.tensor([3.0, 0.7, 0.2][:channels]).view(-1, 1, 1)
    if normalisation == "minmax255":
        low, high = flow.amin(dim=(2, 3), keepdim=True), flow.amax(dim=(2, 3), keepdim=True)
        flow = (flow - low) / (high - low) * 255
    return DeviceDataset(inputs={"flow": flow, "flow_landmarks": 8 + torch.rand(n, 68, 2, generator=g) * 12},
                         labels=labels, keys=[str(i) for i in range(n)], databases=np.array(["casme2"] * n),
                         subjects=np.array(["sub01"] * n), cache=None, missing=[], flow_normalisation=normalisation)


@pytest.mark.parametrize("name,explicit", [("fr", "range"), ("dual_inception", "range"),
                                           ("off_apexnet", "range"), ("ststnet", "identity"),
                                           ("htnet", "identity")])
def test_auto_on_a_minmax_cache_is_bit_identical_to_the_old_mapping(name, explicit):
    data = memory_dataset("minmax255", len(model_class(name).inputs["flow"]))
    recipe = model_class(name).recipe.replace(epochs=2, batch_size=8)
    trained = {}
    for mode in ("auto", explicit):
        with seeded_initialisation(7):
            model = create_model(name, **SMALL[name], normalise=mode)
        train_model(model, data, torch.arange(len(data)), recipe, seed=3)
        trained[mode] = model
    assert trained["auto"].options()["normalise"] == explicit and not hasattr(trained["auto"], "input_scale")
    want, got = trained[explicit].state_dict(), trained["auto"].state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    everything = torch.arange(len(data))
    assert torch.equal(predict_proba(trained["auto"], data, everything),
                       predict_proba(trained[explicit], data, everything))


def test_a_cache_that_records_no_normalisation_is_read_as_minmax255(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    assert "normalisation" not in read_cache(cache).params
    data = load_dataset(cache, {"flow": ("u", "v")}, torch.device("cpu"), composite_list=listing)
    assert data.flow_normalisation == "minmax255"
    model = create_model("dual_inception", hidden=4)
    model.fit_inputs(data, torch.arange(len(data)))
    assert model.normalise == "range" and model.input_record() == {"normalise": "range"}


def test_an_unfitted_auto_model_reads_0_255_images_as_before():
    """A checkpoint written before raw caches records no normalise option: it is rebuilt at auto."""
    x = {"flow": torch.rand(3, 2, 28, 28, generator=torch.Generator().manual_seed(0)) * 255}
    for name in ("dual_inception", "off_apexnet"):
        with seeded_initialisation(1):
            auto = create_model(name, hidden=8).eval()
        with seeded_initialisation(1):
            ranged = create_model(name, hidden=8, normalise="range").eval()
        assert torch.equal(auto(x)["logits"], ranged(x)["logits"])


def test_a_checkpoint_keeps_the_fitted_scale_and_predicts_the_same_after_reload(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1, normalisation="none")
    with seeded_initialisation(0):
        model = create_model("dual_inception", hidden=16)
    data = load_dataset(cache, model.inputs, torch.device("cpu"), composite_list=listing)
    recipe = model.recipe.replace(epochs=2, batch_size=8)
    train_model(model, data, torch.arange(len(data)), recipe, seed=0)
    assert model.normalise == "scale" and not torch.equal(model.input_scale, torch.ones(2))
    path = save_checkpoint(tmp_path / "m.pt", model, fold=None, seed=0, recipe=recipe,
                           preprocess_params=data.cache.params)
    payload = torch.load(path, weights_only=True)
    assert json.loads(payload["options"])["normalise"] == "scale" and "input_scale" in payload["state_dict"]
    loaded, info = load_checkpoint(path)
    assert torch.equal(loaded.input_scale, model.input_scale) and info["options"]["normalise"] == "scale"
    everything = torch.arange(len(data))
    assert torch.equal(predict_proba(loaded, data, everything), predict_proba(model, data, everything))
    # The checkpoint's model refuses minmax255 preprocessing (what fr-mer predict checks).
    with pytest.raises(ParameterError, match="normalise=scale is for raw caches"):
        loaded.check_inputs("minmax255", str(path))


@pytest.mark.parametrize("name", ["dual_inception", "htnet"])
def test_a_stacked_fold_on_a_raw_cache_equals_that_fold_trained_alone(name):
    channels = len(model_class(name).inputs["flow"])
    data = memory_dataset("none", channels, n=24)
    recipe = model_class(name).recipe.replace(epochs=1, batch_size=8)
    indices = [np.arange(24), np.arange(19), np.arange(7, 24)]
    seeds = (11, 12, 13)

    def build():
        models = []
        for seed in seeds:
            with seeded_initialisation(seed):
                models.append(create_model(name, **SMALL[name]))
        return models

    alone, stacked = build(), build()
    for model, rows, seed in zip(alone, indices, seeds):
        train_model(model, data, torch.as_tensor(rows), recipe, seed=seed)
    train_stacked(stacked, data, indices, recipe, seed=0, fold_seeds=seeds)
    everything = torch.arange(len(data))
    for f, (reference, trained) in enumerate(zip(alone, stacked)):
        assert trained.normalise == "scale"
        assert torch.equal(trained.input_scale, reference.input_scale), f"fold {f}"
        torch.testing.assert_close(predict_proba(trained, data, everything),
                                   predict_proba(reference, data, everything), rtol=1e-3, atol=1e-4)
    assert not torch.equal(stacked[0].input_scale, stacked[2].input_scale)  # each fold its own rows


def test_the_hand_written_ststnet_stack_divides_each_fold_by_its_own_scale():
    data = memory_dataset("none", 3, n=24)
    models = []
    for f, rows in enumerate((torch.arange(12), torch.arange(12, 24))):
        with seeded_initialisation(f):
            model = create_model("ststnet", dropout=0.0)  # the stack draws dropout from its own stream
        model.fit_inputs(data, rows)
        models.append(model)
    assert not torch.equal(models[0].input_scale, models[1].input_scale)
    stacked = model_class("ststnet").stacked(models)
    rows = torch.arange(16).view(8, 2)
    for train in (False, True):
        stacked.train(train)
        for m in models:
            m.train(train)
        out = stacked({"flow": data.inputs["flow"][rows]})
        for f, model in enumerate(models):
            expected = model({"flow": data.inputs["flow"][rows[:, f]]})["logits"]
            torch.testing.assert_close(out[:, f], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_flow_model_learns_a_raw_cache(name):
    data = memory_dataset("none", len(model_class(name).inputs["flow"]))
    with seeded_initialisation(0):
        model = create_model(name, **SMALL[name])
    lr = {"ststnet": 1e-2}.get(name, 1e-3)
    recipe = model_class(name).recipe.replace(epochs=30, batch_size=12, lr=lr)
    log = train_model(model, data, torch.arange(len(data)), recipe, seed=0)
    accuracy = (predict_proba(model, data, torch.arange(len(data))).argmax(1) == data.labels).float().mean()
    assert model.normalise == "scale" and np.isfinite(log.final_loss)
    assert float(accuracy) >= 0.9, f"{name}: training accuracy {float(accuracy):.2f}"


@pytest.mark.parametrize("fold_batch", [1, 0])
def test_evaluation_fits_each_fold_on_its_training_rows_only(tmp_path, monkeypatch, fold_batch):
    cache, listing = small_composite(tmp_path, subjects_per_db=2, normalisation="none")
    calls = []
    fit = FlowInputModel.fit_inputs

    def recording(self, data, train_index):
        calls.append(np.sort(np.asarray(torch.as_tensor(train_index).cpu())))
        return fit(self, data, train_index)

    monkeypatch.setattr(FlowInputModel, "fit_inputs", recording)
    recipe = model_class("dual_inception").recipe.replace(epochs=1, batch_size=16)
    config = EvalConfig(model="dual_inception", options={"hidden": 8}, recipe=recipe, seeds=(0,),
                        composite_list=str(listing), fold_batch=fold_batch)
    out = tmp_path / "out"
    run_evaluation(cache, out, config, device=torch.device("cpu"))
    data = load_dataset(cache, {"flow": ("u", "v")}, torch.device("cpu"), composite_list=listing)
    folds = plan_folds(data)
    assert len(calls) == len(folds)
    stored = data.inputs["flow"].double()
    for rows, fold in zip(calls, folds):
        assert np.array_equal(rows, np.sort(fold.train_index))
        assert not set(rows.tolist()) & set(np.asarray(fold.test_index).tolist())
        recorded = json.loads((out / "folds" / "seed0" / f"{fold.database}-{fold.name}.json").read_text())
        expected = stored[torch.as_tensor(fold.train_index)].square().mean(dim=(0, 2, 3)).sqrt()
        assert recorded["inputs"]["normalise"] == "scale"
        np.testing.assert_allclose(recorded["inputs"]["input_scale"], expected.numpy(), rtol=1e-6)


def test_a_0_255_mode_on_a_raw_cache_is_refused_before_anything_is_written(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1, normalisation="none")
    for name, mode in (("fr", "range"), ("dual_inception", "median"), ("ststnet", "identity")):
        config = EvalConfig(model=name, options={"normalise": mode}, seeds=(0,), composite_list=str(listing))
        with pytest.raises(ParameterError, match="--normalisation minmax255"):
            run_evaluation(cache, tmp_path / name, config, device=torch.device("cpu"))
        assert not (tmp_path / name / "config.json").exists()
    old, old_listing = small_composite(tmp_path / "old", subjects_per_db=1)
    config = EvalConfig(model="fr", options={"normalise": "scale"}, seeds=(0,), composite_list=str(old_listing))
    with pytest.raises(ParameterError, match="normalise=scale is for raw caches"):
        run_evaluation(old, tmp_path / "scale", config, device=torch.device("cpu"))


def test_released_weights_on_a_raw_cache_are_refused(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1, normalisation="none")
    weights = tmp_path / "weights"
    weights.mkdir()
    config = EvalConfig(model="ststnet", weights_dir=str(weights), seeds=(0,), composite_list=str(listing))
    with pytest.raises(ValueError, match="--normalisation minmax255"):
        run_evaluation(cache, tmp_path / "out", config, device=torch.device("cpu"))


@pytest.mark.parametrize("recorded", ["minmax255", None])
def test_resuming_a_minmax_cache_with_the_raw_default_names_the_option_to_pass(tmp_path, recorded):
    old = PreprocessParams(normalisation="minmax255")
    params = old.as_dict()
    if recorded is None:  # a cache made before the choice existed
        del params["normalisation"]
    with CacheWriter(tmp_path / "c.h5", params=params, arrays=old.array_specs()):
        pass
    assert PreprocessParams().normalisation == "none"
    with pytest.raises(CacheParamsError,
                       match=r"normalisation \S+ in the cache.*pass --normalisation minmax255"):
        PreprocessRun([], tmp_path / "c.h5", PreprocessParams(), jobs=1)
    if recorded is not None:
        PreprocessRun([], tmp_path / "c.h5", old, jobs=1).close()  # resumes as made
