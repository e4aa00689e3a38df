"""The selection audit (``--audit-selection``): training untouched, figures against a hand computation, resume."""
import json
import re
import statistics

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import f1_score, recall_score

from fr_mer.cli import main
from fr_mer.data import load_dataset
from fr_mer.errors import ParameterError
from fr_mer.evaluation import EvalConfig, EvaluationError, run_evaluation
from fr_mer.models import create_model, model_class
from fr_mer.results_folder import FoldResult
from fr_mer.run_plan import default_fold_batch
from fr_mer.selection_audit import AUDIT_FILE, PLOT_FILE, EpochRecorder, write_selection_audit
from fr_mer.training import train_model
from tests.cachefactory import small_composite

RECIPE = model_class("ststnet").recipe.replace(epochs=3, batch_size=16, lr=1e-2)
SCOPES = ("full", "casme2", "samm", "smic")
#: metrics.json's lines that are times or dates, different in every run.
TIMING_LINES = re.compile(r'^\s*"(wall_seconds_this_run|train_seconds_total|written)": .*$', re.MULTILINE)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(listing, seeds=(0, 1), **kwargs):
    return EvalConfig(model="ststnet", recipe=RECIPE, seeds=seeds, composite_list=str(listing), **kwargs)


def fold_files(out):
    return sorted(p for p in (out / "folds").rglob("*.json") if not p.name.endswith(".audit.json"))


class Interrupt(Exception):
    pass


def stop_after(out, n):
    def callback(result, resumed):
        if len(fold_files(out)) == n:
            raise Interrupt
    return callback


# -- training is untouched ------------------------------------------------------------------------------

def test_recorder_changes_neither_training_nor_modes(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1, clips_per_class=3)
    data = load_dataset(cache, {"flow": ("u", "v", "strain")}, torch.device("cpu"), composite_list=listing)
    # class-balanced draws and dropout both read the generators the audit must not touch
    recipe = RECIPE.replace(epochs=4, class_balanced=True)
    train, held_out = torch.arange(0, len(data) - 6), np.arange(len(data) - 6, len(data))
    states, rng = [], torch.get_rng_state()
    for audit in (False, True):
        torch.manual_seed(7)
        model = create_model("ststnet")
        recorder = EpochRecorder(model, data, held_out) if audit else None
        train_model(model, data, train, recipe, seed=5, on_epoch=recorder)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert len(recorder.proba) == 4 and recorder.proba[0].shape == (6, 3)
    assert states[0].keys() == states[1].keys()
    for name in states[0]:  # weights and batch-norm running statistics, bit for bit
        assert torch.equal(states[0][name], states[1][name]), name
    torch.set_rng_state(rng)
    # each module's own mode is put back, a module left in evaluation mode included
    model.train()
    first = next(m for m in model.modules() if m is not model)
    first.eval()
    recorder(0, 0.0)
    assert model.training and not first.training


def read_text_without_timings(path):
    return TIMING_LINES.sub("", path.read_text())


def without(record, *names):
    return {k: v for k, v in record.items() if k not in names}


def test_audit_leaves_the_results_unchanged_and_its_last_epoch_is_the_result(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=2)
    plain = run_evaluation(cache, tmp_path / "plain", config(listing), device=torch.device("cpu"))
    audited = run_evaluation(cache, tmp_path / "audit", config(listing), device=torch.device("cpu"),
                             audit_selection=True)
    plain_dir, audit_dir = tmp_path / "plain", tmp_path / "audit"
    # metrics.json: the same bytes but for the three timing lines; the audit leaves no mark in it
    assert (read_text_without_timings(audit_dir / "metrics.json")
            == read_text_without_timings(plain_dir / "metrics.json"))
    for name in ("predictions.csv", "config.json", "confusion_full.csv"):
        assert (audit_dir / name).read_text() == (plain_dir / name).read_text(), name
    assert len(fold_files(audit_dir)) == 12
    assert [p.relative_to(audit_dir) for p in fold_files(audit_dir)] == [
        p.relative_to(plain_dir) for p in fold_files(plain_dir)]
    for a, b in zip(fold_files(audit_dir), fold_files(plain_dir)):
        assert (without(json.loads(a.read_text()), "seconds", "samples_per_second")
                == without(json.loads(b.read_text()), "seconds", "samples_per_second")), a.name
    assert not (plain_dir / AUDIT_FILE).exists() and not list((plain_dir / "folds").rglob("*.audit.json"))

    # one log per (seed, fold), beside its fold file; its last epoch is the fold's prediction
    for fold in fold_files(audit_dir):
        log = json.loads(fold.with_suffix(".audit.json").read_text())
        result = json.loads(fold.read_text())
        assert len(log["pred"]) == len(log["proba"]) == RECIPE.epochs
        assert log["keys"] == result["keys"] and log["true"] == result["true"]
        assert log["pred"][-1] == result["pred"] and log["proba"][-1] == result["proba"]
    audit = json.loads((audit_dir / AUDIT_FILE).read_text())
    assert audit["last_epoch_disagreements"] == 0 and audit["seeds"] == [0, 1]
    for scope in SCOPES:
        assert audit["last_epoch"][scope] == audited[scope] == plain[scope], scope
    for seed in ("0", "1"):
        chosen = audit["selected_epochs"][seed]
        assert 1 <= chosen["best_single_epoch"] <= RECIPE.epochs
        assert len(chosen["best_epoch_per_subject"]) == audited["n_folds"]
        assert set(chosen["last_epoch"].values()) == {RECIPE.epochs}
    assert (audit_dir / PLOT_FILE).stat().st_size > 0
    assert "Selection audit" in (audit_dir / "summary.md").read_text()


# -- the figures, against a hand computation ------------------------------------------------------------

#: (seed, database, subject): (true labels, predictions per epoch). casme2/sub01 of seed 0 scores 2/3 at
#: epochs 2 and 3 (the earliest, 2, is taken); seed 1's samm/006 ran a fourth epoch, its best.
HAND = {
    (0, "casme2", "sub01"): ([0, 1, 2], [[0, 0, 0], [0, 1, 1], [0, 1, 0]]),
    (0, "samm", "006"): ([0, 0, 1], [[0, 0, 1], [1, 0, 1], [0, 1, 1]]),
    (1, "casme2", "sub01"): ([0, 1, 2], [[0, 1, 2], [0, 0, 0], [1, 1, 2]]),
    (1, "samm", "006"): ([0, 0, 1], [[1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]]),
}


def hand_scores(true, pred):
    """UF1 and UAR by scikit-learn, over the classes present in the truth."""
    labels = sorted(set(true))
    return (f1_score(true, pred, labels=labels, average="macro", zero_division=0),
            recall_score(true, pred, labels=labels, average="macro", zero_division=0))


def first_best(values):
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


def hand_audit():
    """Per figure, scope and seed: (UF1, UAR); and the epochs taken (from 0)."""
    figures, taken = {}, {}
    for seed in (0, 1):
        folds = {k: v for k, v in HAND.items() if k[0] == seed}
        common = min(len(epochs) for _, epochs in folds.values())

        def pooled(epoch_of, database=None):
            true = [t for k, (ts, _) in folds.items() if database in (None, k[1]) for t in ts]
            pred = [p for k, (_, ps) in folds.items() if database in (None, k[1]) for p in ps[epoch_of(k)]]
            return hand_scores(true, pred)

        single = first_best([pooled(lambda k, e=e: e)[0] for e in range(common)])
        per_subject = {k: first_best([np.mean(np.equal(p, ts)) for p in ps]) for k, (ts, ps) in folds.items()}
        rules = {"last_epoch": lambda k: len(folds[k][1]) - 1, "best_epoch_per_subject": per_subject.get,
                 "best_single_epoch": lambda k: single}
        for name, rule in rules.items():
            for scope in ("full", "casme2", "samm"):
                figures.setdefault(name, {}).setdefault(scope, {})[seed] = pooled(
                    rule, None if scope == "full" else scope)
        taken[seed] = (single, per_subject)
    return figures, taken


def write_hand_run(out):
    results = []
    for (seed, database, subject), (true, epochs) in HAND.items():
        keys = [f"{database}/{subject}/clip{i}" for i in range(len(true))]
        proba = [[[1.0 if c == p else 0.0 for c in range(3)] for p in epoch] for epoch in epochs]
        folder = out / "folds" / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{database}-{subject}.audit.json").write_text(json.dumps({
            "seed": seed, "database": database, "subject": subject, "keys": keys, "true": true,
            "pred": epochs, "proba": proba}))
        results.append(FoldResult(seed=seed, database=database, subject=subject, keys=keys, true=true,
                                  pred=epochs[-1], proba=proba[-1], n_train=10, seconds=1.0, train_loss=0.5,
                                  samples_per_second=10.0))
    return results


def test_figures_match_a_hand_computation(tmp_path):
    results = write_hand_run(tmp_path)
    lines = write_selection_audit(tmp_path, results, model="hand", protocol="composite", database=None,
                                  seeds=(0, 1), classes=("negative", "positive", "surprise"),
                                  scopes=("full", "casme2", "samm"))
    audit = json.loads((tmp_path / AUDIT_FILE).read_text())
    figures, taken = hand_audit()
    for name, scopes in figures.items():
        for scope, per_seed in scopes.items():
            entry = audit[name][scope]
            for seed, (uf1, uar) in per_seed.items():
                assert entry["per_seed"][str(seed)] == {"uf1": pytest.approx(uf1, abs=5e-5),
                                                        "uar": pytest.approx(uar, abs=5e-5)}, (name, scope, seed)
            uf1s = [v[0] for v in per_seed.values()]
            assert entry["uf1"] == pytest.approx(statistics.fmean(uf1s), abs=5e-5)
            assert entry["uf1_std"] == pytest.approx(statistics.stdev(uf1s), abs=5e-5)
    # seed 0 in closed form: F1 per class of the last epoch 2/3, 4/5, 0; of the best epoch per subject 1, 4/5, 0
    assert audit["last_epoch"]["full"]["per_seed"]["0"]["uf1"] == round((2 / 3 + 4 / 5) / 3, 4)
    assert audit["best_epoch_per_subject"]["full"]["per_seed"]["0"]["uf1"] == 0.6
    # epochs from 1: ties go to the earliest; the single epoch is one of those every fold ran
    assert audit["selected_epochs"]["0"]["best_single_epoch"] == 2 == taken[0][0] + 1
    assert audit["selected_epochs"]["0"]["best_epoch_per_subject"] == {"casme2/sub01": 2, "samm/006": 1}
    assert audit["selected_epochs"]["1"]["best_epoch_per_subject"] == {"casme2/sub01": 1, "samm/006": 4}
    assert audit["selected_epochs"]["1"]["best_single_epoch"] <= 3
    assert audit["epochs"] == {"per_fold_min": 3, "per_fold_max": 4}
    assert len(audit["uf1_by_epoch"]["1"]) == 3
    assert "best epoch per subject" in lines and (tmp_path / PLOT_FILE).is_file()


def test_partial_logs_give_no_audit(tmp_path):
    results = write_hand_run(tmp_path)
    (tmp_path / AUDIT_FILE).write_text("{}")  # left by an earlier run
    (tmp_path / "folds" / "seed1" / "samm-006.audit.json").unlink()
    lines = write_selection_audit(tmp_path, results, model="hand", protocol="composite", database=None,
                                  seeds=(0, 1), classes=("negative", "positive", "surprise"), scopes=("full",))
    assert "not written, 1 of 4 folds" in lines
    assert not (tmp_path / AUDIT_FILE).exists() and not (tmp_path / PLOT_FILE).exists()


# -- resume, refusals, the command line, the cluster ----------------------------------------------------

def test_resumed_audit_run_keeps_the_finished_folds_logs(tmp_path):
    cache, listing = small_composite(tmp_path)
    reference = tmp_path / "reference"
    run_evaluation(cache, reference, config(listing, seeds=(0,)), device=torch.device("cpu"), audit_selection=True)
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        run_evaluation(cache, out, config(listing, seeds=(0,)), device=torch.device("cpu"), audit_selection=True,
                       on_fold=stop_after(out, 4))
    assert len(list((out / "folds").rglob("*.audit.json"))) == 4
    seen = []
    run_evaluation(cache, out, config(listing, seeds=(0,)), device=torch.device("cpu"), audit_selection=True,
                   on_fold=lambda r, resumed: seen.append(resumed))
    assert seen == [True] * 4 + [False] * 5
    assert (out / AUDIT_FILE).read_text() == (reference / AUDIT_FILE).read_text()
    for log in (reference / "folds").rglob("*.audit.json"):
        assert (out / log.relative_to(reference)).read_text() == log.read_text()

    # resumed without the audit: the new folds have no logs, and the report says so instead of a partial audit
    for fold in fold_files(out)[-2:]:
        fold.unlink()
        fold.with_suffix(".audit.json").unlink()
    run_evaluation(cache, out, config(listing, seeds=(0,)), device=torch.device("cpu"))
    assert not (out / AUDIT_FILE).exists()
    assert "not written, 2 of 9 folds have no per-epoch log" in (out / "summary.md").read_text()
    # and the audit is refused on resume while finished folds lack their logs
    with pytest.raises(EvaluationError, match="2 finished fold.*no per-epoch log"):
        run_evaluation(cache, out, config(listing, seeds=(0,)), device=torch.device("cpu"), audit_selection=True)


def test_audit_refuses_stacked_folds_and_released_weights(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    with pytest.raises(ParameterError, match="drop --fold-batch"):
        run_evaluation(cache, tmp_path / "stack", config(listing, fold_batch=2), device="cpu", audit_selection=True)
    weights = tmp_path / "weights"
    weights.mkdir()
    with pytest.raises(ParameterError, match="--weights trains nothing"):
        run_evaluation(cache, tmp_path / "w", config(listing, weights_dir=str(weights)), device="cpu",
                       audit_selection=True)
    assert not (tmp_path / "stack").exists() and not (tmp_path / "w").exists()
    # without --fold-batch, a fresh audited run trains fold by fold, on CUDA too
    assert default_fold_batch("ststnet", None, torch.device("cuda"), None, stacking=False) == 1


def test_cli_audit_selection(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "evaluate", "--cache", str(cache), "--model", "ststnet", "--epochs", "2", "--seeds", "1",
        "--composite-list", str(listing), "--device", "cpu", "--threads", "1", "--audit-selection",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Selection audit" in result.output
    audit = json.loads((out / AUDIT_FILE).read_text())
    assert audit["last_epoch"]["full"] == json.loads((out / "metrics.json").read_text())["full"]
    result = CliRunner().invoke(main, [
        "evaluate", "--cache", str(cache), "--model", "ststnet", "--epochs", "2", "--seeds", "1", "--fold-batch",
        "3", "--composite-list", str(listing), "--audit-selection", "--out", str(tmp_path / "stacked")])
    assert result.exit_code == 1 and "drop --fold-batch" in result.output and "Traceback" not in result.output


def test_audit_on_a_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    reference = run_evaluation(cache, tmp_path / "local", config(listing, seeds=(0,)), device="cpu",
                               audit_selection=True)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        run_evaluation(cache, tmp_path / "cluster", config(listing, seeds=(0,)), device="cpu", scheduler=client,
                       audit_selection=True)
    audit = json.loads((tmp_path / "cluster" / AUDIT_FILE).read_text())
    assert audit["last_epoch"]["full"] == reference["full"]
    assert audit == json.loads((tmp_path / "local" / AUDIT_FILE).read_text())
