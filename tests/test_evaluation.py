"""Training, evaluation, resume and checkpoints on small generated caches."""
import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fr_mer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fr_mer.cli import main
from fr_mer.data import load_dataset, resolve_device
from fr_mer.evaluation import EvalConfig, EvaluationError, run_evaluation
from fr_mer.models import create_model, model_class
from fr_mer.training import predict_proba, train_model
from fr_mer.pipeline.cache import CacheError
from tests.cachefactory import small_composite

FAST = model_class("ststnet").recipe.replace(epochs=40, batch_size=16, lr=1e-2)


def test_short_training_learns_a_separable_problem(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1, clips_per_class=3)
    data = load_dataset(cache, {"flow": ("u", "v", "strain")}, torch.device("cpu"), composite_list=listing)
    torch.manual_seed(0)
    model = create_model("ststnet")
    index = torch.arange(len(data))
    before = (predict_proba(model, data, index).argmax(1) == data.labels).float().mean()
    log = train_model(model, data, index, FAST, seed=0)
    after = (predict_proba(model, data, index).argmax(1) == data.labels).float().mean()
    assert after >= 0.9 > before
    assert log.steps > 0 and log.final_loss < 1.0


def test_training_is_repeatable_for_a_seed(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1, clips_per_class=2)
    data = load_dataset(cache, {"flow": ("u", "v", "strain")}, torch.device("cpu"), composite_list=listing)
    recipe = FAST.replace(epochs=5)
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = create_model("ststnet")
        train_model(model, data, torch.arange(len(data)), recipe, seed=3)
        outputs.append(predict_proba(model, data, torch.arange(len(data))))
    torch.testing.assert_close(outputs[0], outputs[1])


def evaluate(cache, listing, out, seeds=(0,), **kwargs):
    config = EvalConfig(model="ststnet", recipe=FAST.replace(epochs=2), seeds=seeds,
                        composite_list=str(listing), **kwargs)
    return run_evaluation(cache, out, config, device=torch.device("cpu"))


def test_composite_evaluation_writes_reports(tmp_path):
    cache, listing = small_composite(tmp_path)
    metrics = evaluate(cache, listing, tmp_path / "out", seeds=(0, 1))
    assert metrics["n_folds"] == 9 and metrics["n_samples"] == 54
    for scope in ("full", "casme2", "samm", "smic"):
        assert set(metrics[scope]) >= {"uf1", "uar", "uf1_std", "uar_std", "per_seed"}
        assert set(metrics[scope]["per_seed"]) == {"0", "1"}
        values = [v["uf1"] for v in metrics[scope]["per_seed"].values()]
        assert metrics[scope]["uf1"] == pytest.approx(np.mean(values), abs=1e-4)
    out = tmp_path / "out"
    for name in ("metrics.json", "predictions.csv", "folds.csv", "summary.md", "confusion_full.png",
                 "confusion_smic.png"):
        assert (out / name).is_file(), name
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert predictions[0].startswith("sample,subject,database,true,predicted,seed")
    assert len(predictions) == 1 + 2 * 54


def test_interrupted_evaluation_resumes_at_first_unfinished_fold(tmp_path):
    cache, listing = small_composite(tmp_path)
    full = evaluate(cache, listing, tmp_path / "reference")

    class Interrupt(Exception):
        pass

    def stop_after_four(result, resumed):
        if len(list((tmp_path / "run" / "folds").rglob("*.json"))) == 4:
            raise Interrupt

    config = EvalConfig(model="ststnet", recipe=FAST.replace(epochs=2), seeds=(0,),
                        composite_list=str(listing))
    with pytest.raises(Interrupt):
        run_evaluation(cache, tmp_path / "run", config, device=torch.device("cpu"), on_fold=stop_after_four)
    seen = []
    metrics = run_evaluation(cache, tmp_path / "run", config, device=torch.device("cpu"),
                             on_fold=lambda r, resumed: seen.append(resumed))
    assert seen == [True] * 4 + [False] * 5
    assert metrics["full"]["uf1"] == full["full"]["uf1"]  # per-fold seeds make resumed runs identical


def test_two_processes_share_a_run_from_both_ends(tmp_path):
    cache, listing = small_composite(tmp_path)
    reference = evaluate(cache, listing, tmp_path / "reference", seeds=(0, 1))

    class Interrupt(Exception):
        pass

    def stop_after(n):
        def callback(result, resumed):
            if len(list((tmp_path / "run" / "folds").rglob("*.json"))) == n:
                raise Interrupt
        return callback

    config = EvalConfig(model="ststnet", recipe=FAST.replace(epochs=2), seeds=(0, 1),
                        composite_list=str(listing))
    # The forward process has done 5 of the 18 folds when the other one, from the end, does 8.
    with pytest.raises(Interrupt):
        run_evaluation(cache, tmp_path / "run", config, device=torch.device("cpu"), on_fold=stop_after(5))
    with pytest.raises(Interrupt):
        run_evaluation(cache, tmp_path / "run", config, device=torch.device("cpu"), from_end=True,
                       on_fold=stop_after(13))
    done = {p.relative_to(tmp_path / "run") for p in (tmp_path / "run" / "folds").rglob("*.json")}
    assert {p.parent.name for p in done} == {"seed0", "seed1"}  # seed 1's folds came from the end
    seen = []
    metrics = run_evaluation(cache, tmp_path / "run", config, device=torch.device("cpu"), from_end=True,
                             on_fold=lambda r, resumed: seen.append(resumed))
    assert seen == [True] * 8 + [False] * 5 + [True] * 5
    for scope in ("full", "casme2", "samm", "smic"):
        assert metrics[scope] == reference[scope]
    assert ((tmp_path / "run" / "predictions.csv").read_text()
            == (tmp_path / "reference" / "predictions.csv").read_text())


def test_resume_refuses_other_settings(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    evaluate(cache, listing, tmp_path / "out")
    config = EvalConfig(model="ststnet", recipe=FAST.replace(epochs=3), seeds=(0,), composite_list=str(listing))
    with pytest.raises(EvaluationError, match="other settings"):
        run_evaluation(cache, tmp_path / "out", config, device=torch.device("cpu"))


def test_cli_evaluate_and_weights_per_fold(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("sub01", "006", "s01"):
        torch.manual_seed(0)
        torch.save(create_model("ststnet").state_dict(), weights / f"{name}.pth")
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--cache", str(cache), "--model", "ststnet", "--weights",
                                  str(weights), "--composite-list", str(listing), "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "w" / "metrics.json").read_text())["n_folds"] == 3
    (weights / "s01.pth").unlink()
    result = runner.invoke(main, ["evaluate", "--cache", str(cache), "--model", "ststnet", "--weights",
                                  str(weights), "--composite-list", str(listing), "--out", str(tmp_path / "w2")])
    assert result.exit_code != 0 and "s01.pth" in result.output and "Traceback" not in result.output


def test_cache_of_another_schema_version_is_refused_with_a_message(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    with h5py.File(cache, "r+") as f:
        f.attrs["schema_version"] = 0
    result = CliRunner().invoke(main, ["evaluate", "--cache", str(cache), "--model", "ststnet",
                                       "--composite-list", str(listing), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "schema version 0" in result.output and "Traceback" not in result.output


def test_version_1_cache_is_refused_with_the_rebuild_command(tmp_path):
    cache, _ = small_composite(tmp_path, subjects_per_db=1)
    with h5py.File(cache, "r+") as f:
        f.attrs["schema_version"] = 1
    with pytest.raises(CacheError, match="schema version 1.*preprocess --overwrite"):
        load_dataset(cache, {"flow": ("u", "v", "strain")}, torch.device("cpu"))


def test_cache_without_the_models_inputs_is_refused(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    with pytest.raises(CacheError, match="apex_face"):
        load_dataset(cache, {"apex_face": None}, torch.device("cpu"), composite_list=listing)


def test_checkpoint_round_trip_and_wrong_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("ststnet", dropout=0.3)
    path = save_checkpoint(tmp_path / "m.pt", model, fold="sub01", seed=0, recipe=FAST)
    loaded, info = load_checkpoint(path)
    assert info["model"] == "ststnet" and info["options"] == {"dropout": 0.3} and info["fold"] == "sub01"
    x = {"flow": torch.rand(4, 3, 28, 28) * 255}
    torch.testing.assert_close(loaded.eval()(x)["logits"], model.eval()(x)["logits"])
    with pytest.raises(CheckpointError, match="not 'fr'"):
        load_checkpoint(path, expected_model="fr")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="not an fr-mer checkpoint"):
        load_checkpoint(tmp_path / "bare.pth")


def test_a_checkpoint_from_before_an_option_existed_rebuilds_the_model_it_was_trained_as(tmp_path):
    """MERANet's ``clip_input`` (default: the onset difference) came after checkpoints trained on grey
    levels: one without it loads as ``grey_levels``; one that records it keeps what it records."""
    torch.manual_seed(0)
    old = create_model("meranet", input_size=16, base_width=4, layers=(1, 1, 1, 1), clip_input="grey_levels")
    path = save_checkpoint(tmp_path / "old.pt", old, fold="sub01", seed=0, recipe=FAST)
    payload = torch.load(path, weights_only=True)
    options = json.loads(payload["options"])
    del options["clip_input"]  # as written before the option existed
    payload["options"] = json.dumps(options, sort_keys=True)
    torch.save(payload, path)
    loaded, info = load_checkpoint(path)
    assert loaded.clip_input == "grey_levels" and info["options"]["clip_input"] == "grey_levels"
    clip = {"clip_frames": torch.rand(2, 4, 16, 16) * 255}
    torch.testing.assert_close(loaded(clip)["logits"], old.eval()(clip)["logits"])
    new = create_model("meranet", input_size=16, base_width=4, layers=(1, 1, 1, 1))
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "new.pt", new, fold="sub01", seed=0, recipe=FAST))
    assert loaded.clip_input == "onset_difference"


def test_fold_missing_a_class_is_a_clear_error(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    data = load_dataset(cache, {"flow": ("u", "v", "strain")}, torch.device("cpu"), composite_list=listing)
    only_negative = torch.nonzero(data.labels == 0).flatten()
    with pytest.raises(ValueError, match="no sample of class"):
        train_model(create_model("ststnet"), data, only_negative, FAST, seed=0)


def test_device_auto_selects_cuda_when_present():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_runs_on_cuda(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    data = load_dataset(cache, {"flow": ("u", "v", "strain")}, torch.device("cuda"), composite_list=listing)
    assert data.inputs["flow"].is_cuda and data.labels.is_cuda
    model = create_model("ststnet")
    train_model(model, data, torch.arange(len(data)), FAST.replace(epochs=2), seed=0)
    assert next(model.parameters()).is_cuda
