"""``fr-mer compare``: paired statistics against an independent computation on hand-made run folders."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.compare import ComparisonError, compare_runs, load_run, load_runs
from fr_mer.comparison_report import verdict
from fr_mer.errors import FrMerError, ParameterError
from fr_mer.paired_statistics import bootstrap_intervals, exact_binomial_p_value, mcnemar_p_value, sign_counts
from fr_mer.pipeline.labels import CLASSES

#: 6 subjects (2 per database), each with one sample of each class: 18 samples.
SUBJECTS = (("casme2", "sub01"), ("casme2", "sub02"), ("samm", "006"), ("samm", "007"),
            ("smic", "s01"), ("smic", "s02"))
SAMPLES = tuple((f"{db}/{subject}/{subject}_{c}", db, subject, t)
                for db, subject in SUBJECTS for t, c in enumerate(CLASSES))
TRUE = [t for *_, t in SAMPLES]


def wrong(index: int) -> int:
    return (TRUE[index] + 1) % len(CLASSES)


def predictions(errors: dict[int, set[int]]) -> dict[int, list[int]]:
    """Per seed, the true labels except at the sample indices listed for that seed."""
    return {seed: [wrong(i) if i in bad else t for i, t in enumerate(TRUE)] for seed, bad in errors.items()}


#: Run A errs once (seed 2, sample 17); run B errs on 1, 2 and 3 samples over seeds 0, 1, 2,
#: spread over every subject, and is right on sample 17.
PRED_A = predictions({0: set(), 1: set(), 2: {17}})
PRED_B = predictions({0: {0}, 1: {4, 8}, 2: {9, 12, 15}})


def write_run(folder: Path, preds: dict[int, list[int]], samples=SAMPLES, model: str = "ststnet",
              protocol: str = "composite", classes=CLASSES) -> Path:
    """A run folder as fr-mer evaluate leaves it: config.json, metrics.json and predictions.csv."""
    folder.mkdir(parents=True)
    seeds = sorted(preds)
    (folder / "config.json").write_text(json.dumps({"config": {"model": model, "protocol": protocol,
                                                               "seeds": seeds}, "cache": "/data/x.h5"}))
    (folder / "metrics.json").write_text(json.dumps({"protocol": protocol, "model": model, "seeds": seeds}))
    with open(folder / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "subject", "database", "true", "predicted", "seed",
                         *[f"p_{c}" for c in classes]])
        for seed in seeds:
            for (key, database, subject, true), pred in zip(samples, preds[seed]):
                probs = [0.8 if c == pred else 0.1 for c in range(len(classes))]
                writer.writerow([key, subject, database, classes[true], classes[pred], seed,
                                 *[f"{p:.4f}" for p in probs]])
    return folder


def hand_uf1(true, pred) -> float:
    scores = []
    for c in sorted(set(true)):
        tp = sum(t == c and p == c for t, p in zip(true, pred))
        fp = sum(t != c and p == c for t, p in zip(true, pred))
        fn = sum(t == c and p != c for t, p in zip(true, pred))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def hand_uar(true, pred) -> float:
    recalls = [sum(t == c and p == c for t, p in zip(true, pred)) / sum(t == c for t in true)
               for c in sorted(set(true))]
    return sum(recalls) / len(recalls)


@pytest.fixture
def runs(tmp_path):
    return write_run(tmp_path / "fr", PRED_A, model="fr"), write_run(tmp_path / "dual", PRED_B, model="dual")


def test_per_seed_differences_mean_and_se_by_hand(runs):
    comparison = compare_runs(*runs, n_bootstrap=50)
    row = comparison.row("full", "uf1")
    # Seed 0: B calls one negative positive. negative F1 = 10/11, positive 12/13, surprise 1.
    assert row.b[0] == pytest.approx((10 / 11 + 12 / 13 + 1) / 3)
    assert comparison.row("full", "uar").b[0] == pytest.approx((5 / 6 + 1 + 1) / 3)
    differences = [hand_uf1(TRUE, PRED_A[s]) - hand_uf1(TRUE, PRED_B[s]) for s in (0, 1, 2)]
    assert row.difference == pytest.approx(differences)
    mean = sum(differences) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2) / math.sqrt(3)
    assert row.mean_difference == pytest.approx(mean)
    assert row.se_difference == pytest.approx(se)
    assert row.sd_a == pytest.approx(np.std([hand_uf1(TRUE, PRED_A[s]) for s in (0, 1, 2)], ddof=1))
    assert (row.wins_a, row.wins_b, row.ties) == (3, 0, 0)
    assert (row.n_samples, row.n_subjects) == (18, 6)
    assert comparison.seeds == (0, 1, 2) and (comparison.model_a, comparison.model_b) == ("fr", "dual")


def test_per_database_rows_use_that_databases_samples(runs):
    comparison = compare_runs(*runs, n_bootstrap=50)
    assert comparison.scopes == ("full", "casme2", "samm", "smic")
    samm = [i for i, (_, db, _, _) in enumerate(SAMPLES) if db == "samm"]
    true = [TRUE[i] for i in samm]
    row = comparison.row("samm", "uar")
    expected = [hand_uar(true, [PRED_A[s][i] for i in samm]) - hand_uar(true, [PRED_B[s][i] for i in samm])
                for s in (0, 1, 2)]
    assert row.difference == pytest.approx(expected)
    # B errs on samm samples in seeds 1 (sample 8) and 2 (sample 9) only: seed 0 ties there.
    assert (row.wins_a, row.wins_b, row.ties) == (2, 0, 1)
    assert row.n_samples == 6 and row.n_subjects == 2


def test_mcnemar_by_hand(runs):
    comparison = compare_runs(*runs, n_bootstrap=50)
    full = {t.seed: t for t in comparison.mcnemar if t.scope == "full"}
    assert [(full[s].only_a_correct, full[s].only_b_correct) for s in (0, 1, 2)] == [(1, 0), (2, 0), (3, 1)]
    # Exact binomial, p = 1/2: 1 discordant -> 2 * 1/2 capped at 1; 2 -> 2/4; (3, 1) -> 2 * (1 + 4) / 16.
    assert [full[s].p_value for s in (0, 1, 2)] == pytest.approx([1.0, 0.5, 0.625])


def test_mcnemar_p_value_small_tables():
    # 1 vs 6 discordant: 2 * (C(7,0) + C(7,1)) / 2^7; 2 vs 8: 2 * (1 + 10 + 45) / 2^10.
    assert mcnemar_p_value(1, 6) == pytest.approx(16 / 128)
    assert mcnemar_p_value(8, 2) == pytest.approx(112 / 1024)
    assert mcnemar_p_value(0, 0) == 1.0 and mcnemar_p_value(5, 5) == 1.0
    for k, n in [(0, 1), (3, 9), (10, 40), (17, 30), (30, 30)]:
        assert exact_binomial_p_value(k, n) == pytest.approx(mcnemar_p_value(k, n - k), rel=1e-9)


def test_bootstrap_is_reproducible_and_matches_an_independent_resampling(runs):
    first = compare_runs(*runs, n_bootstrap=300, seed=7)
    again = compare_runs(*runs, n_bootstrap=300, seed=7)
    other = compare_runs(*runs, n_bootstrap=300, seed=8)
    row = first.row("full", "uf1")
    assert row.interval == again.row("full", "uf1").interval
    assert row.interval != other.row("full", "uf1").interval
    assert row.interval[0] <= row.mean_difference <= row.interval[1]
    assert first.row("full", "uar").interval[0] <= first.row("full", "uar").mean_difference

    # The same draws (subjects sorted by name, the full scope drawn first), scored by hand.
    names = sorted(f"{db}/{subject}" for db, subject in SUBJECTS)
    members = {name: [i for i, (_, db, subject, _) in enumerate(SAMPLES) if f"{db}/{subject}" == name]
               for name in names}
    draws = np.random.default_rng(7).integers(0, len(names), size=(300, len(names)))
    means = []
    for draw in draws:
        rows = [i for d in draw for i in members[names[d]]]
        true = [TRUE[i] for i in rows]
        means.append(np.mean([hand_uf1(true, [PRED_A[s][i] for i in rows])
                              - hand_uf1(true, [PRED_B[s][i] for i in rows]) for s in (0, 1, 2)]))
    assert row.interval == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


def test_bootstrap_interval_of_identical_predictions_is_zero():
    true = np.array(TRUE)
    pred = np.array([PRED_B[s] for s in (0, 1, 2)])
    folds = np.array([f"{db}/{subject}" for _, db, subject, _ in SAMPLES])
    intervals = bootstrap_intervals(true, pred, pred.copy(), folds, 20, np.random.default_rng(0))
    assert intervals == {"uf1": (0.0, 0.0), "uar": (0.0, 0.0)}


def test_verdict_says_beats_only_when_the_interval_excludes_zero(runs, tmp_path):
    comparison = compare_runs(*runs, n_bootstrap=300, seed=0)
    low, high = comparison.row("full", "uf1").interval
    assert low > 0
    assert verdict(comparison).startswith("fr beats dual:")
    reverse = compare_runs(runs[1], runs[0], n_bootstrap=300, seed=0)
    assert verdict(reverse).startswith("fr beats dual:")
    # A's only error against B's single seed-0 error, one seed each: the interval spans 0.
    close_a = write_run(tmp_path / "close_a", {0: PRED_A[2]})
    close_b = write_run(tmp_path / "close_b", {0: PRED_B[0]})
    tied = compare_runs(close_a, close_b, n_bootstrap=300)
    assert tied.row("full", "uf1").interval[0] < 0 < tied.row("full", "uf1").interval[1]
    line = verdict(tied)
    assert "beats" not in line and line.startswith("No difference shown") and "Fewer than 3 seeds" in line
    assert math.isnan(tied.row("full", "uf1").se_difference)


def test_same_folder_names_are_labelled_by_path(tmp_path):
    a = write_run(tmp_path / "x" / "run", PRED_A)
    b = write_run(tmp_path / "y" / "run", PRED_B)
    comparison = compare_runs(a, b, n_bootstrap=20)
    assert (comparison.label_a, comparison.label_b) == (str(a), str(b))


def mismatch(tmp_path, preds_b=PRED_B, samples_b=SAMPLES, protocol_b="composite") -> str:
    a = write_run(tmp_path / "a", PRED_A)
    b = write_run(tmp_path / "b", preds_b, samples=samples_b, protocol=protocol_b)
    with pytest.raises(ComparisonError) as caught:
        compare_runs(a, b, n_bootstrap=10)
    assert isinstance(caught.value, FrMerError)
    return str(caught.value)


def test_runs_with_other_seeds_are_refused(tmp_path):
    message = mismatch(tmp_path, preds_b={0: PRED_B[0], 1: PRED_B[1]})
    assert "different seeds (0, 1, 2 and 0, 1)" in message


def test_runs_with_other_samples_are_refused(tmp_path):
    message = mismatch(tmp_path, preds_b={s: p[:-1] for s, p in PRED_B.items()}, samples_b=SAMPLES[:-1])
    assert "different samples" in message and "1 only in the first: smic/s02/s02_surprise" in message


def test_runs_with_other_true_labels_are_refused(tmp_path):
    key, db, subject, _ = SAMPLES[3]
    samples = SAMPLES[:3] + ((key, db, subject, 2),) + SAMPLES[4:]
    message = mismatch(tmp_path, samples_b=samples)
    assert f"sample {key} is labelled negative in the first run and surprise in the second" in message


def test_runs_with_other_folds_are_refused(tmp_path):
    key, db, _, true = SAMPLES[0]
    samples = ((key, db, "sub09", true),) + SAMPLES[1:]
    message = mismatch(tmp_path, samples_b=samples)
    assert f"sample {key} is held out with casme2/sub01 in the first run and with casme2/sub09" in message


def test_runs_of_other_protocols_are_refused(tmp_path):
    assert "different protocols (composite and lodo)" in mismatch(tmp_path, protocol_b="lodo")


def test_seeds_run_apart_are_one_side(runs, tmp_path):
    """Seeds 0 and 1, 2 of each model in separate folders give the figures of the single folders."""
    whole = compare_runs(*runs, n_bootstrap=200, seed=3)
    a0 = write_run(tmp_path / "fr-s0", {0: PRED_A[0]}, model="fr")
    a12 = write_run(tmp_path / "fr-s1", {1: PRED_A[1], 2: PRED_A[2]}, model="fr")
    b0 = write_run(tmp_path / "dual-s0", {0: PRED_B[0]}, model="dual")
    b12 = write_run(tmp_path / "dual-s1", {1: PRED_B[1], 2: PRED_B[2]}, model="dual")
    merged = compare_runs([a12, a0], [b0, b12], n_bootstrap=200, seed=3)
    assert merged.seeds == (0, 1, 2)
    assert merged.metrics == whole.metrics and merged.mcnemar == whole.mcnemar
    assert merged.label_a == "fr-s1 + fr-s0" and merged.run_b == f"{b0} + {b12}"
    result = CliRunner().invoke(main, ["compare", str(a0), str(b0), "--also-a", str(a12), "--also-b", str(b12),
                                       "--bootstrap", "200", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "seeds 0, 1, 2, paired" in result.output
    # Past three folders a side is named by its first and a count; the full list stays in run_a.
    four = [write_run(tmp_path / f"fr-one-s{s}", {s: PRED_A[s % 3]}, model="fr") for s in range(4)]
    b3 = write_run(tmp_path / "dual-s3", {3: PRED_B[0]}, model="dual")
    many = compare_runs(four, [b0, b12, b3], n_bootstrap=20, seed=3)
    assert many.label_a == "fr-one-s0 + 3 more folders" and many.label_b == "dual-s0 + dual-s1 + dual-s3"
    assert many.run_a == " + ".join(str(f) for f in four)


def test_a_side_refuses_a_seed_twice_and_other_models(tmp_path):
    a0 = write_run(tmp_path / "fr-s0", {0: PRED_A[0]}, model="fr")
    again = write_run(tmp_path / "fr-again", {0: PRED_A[0], 1: PRED_A[1]}, model="fr")
    other = write_run(tmp_path / "dual-s1", {1: PRED_B[1]}, model="dual")
    with pytest.raises(ComparisonError, match="both hold seed 0; give each seed once"):
        load_runs([a0, again])
    with pytest.raises(ComparisonError, match="not runs of the same model, protocol, options and recipe"):
        load_runs([a0, other])
    recipe = write_run(tmp_path / "fr-s2", {2: PRED_A[2]}, model="fr")
    metrics = json.loads((recipe / "metrics.json").read_text())
    (recipe / "metrics.json").write_text(json.dumps({**metrics, "recipe": {"epochs": 40}}))
    with pytest.raises(ComparisonError, match="not runs of the same model"):
        load_runs([a0, recipe])
    fewer = write_run(tmp_path / "fr-s3", {3: PRED_A[0][:-1]}, samples=SAMPLES[:-1], model="fr")
    with pytest.raises(ComparisonError, match="different samples"):
        load_runs([a0, fewer])


def test_unreadable_run_folders_name_the_file(tmp_path):
    with pytest.raises(ComparisonError, match="no such run folder"):
        load_run(tmp_path / "absent")
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ComparisonError, match="predictions.csv: missing"):
        load_run(tmp_path / "unfinished")
    run = write_run(tmp_path / "run", PRED_A)
    table = run / "predictions.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(ComparisonError, match=r"row 56: sample casme2/sub01/sub01_negative is listed twice"):
        load_run(run)
    table.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ComparisonError, match=r"seed 2 has no prediction for 1 of the run's 18 samples"):
        load_run(run)
    table.write_text("\n".join(lines[:1] + [lines[1].replace(",negative,", ",anger,", 1)]) + "\n")
    with pytest.raises(ComparisonError, match=r"row 2: true class 'anger' is not one of"):
        load_run(run)
    with pytest.raises(ParameterError):
        compare_runs(run, run, n_bootstrap=0)


def test_cli_prints_the_tables_and_verdict_and_writes_json_and_markdown(runs, tmp_path):
    json_path, markdown_path = tmp_path / "cmp.json", tmp_path / "cmp.md"
    result = CliRunner().invoke(main, ["compare", str(runs[0]), str(runs[1]), "--bootstrap", "200", "--seed", "3",
                                       "--json", str(json_path), "--markdown", str(markdown_path)])
    assert result.exit_code == 0, result.output
    assert result.output == markdown_path.read_text()
    assert "| full | UF1 | 18 | 6 |" in result.output and "Δ (mean ± se)" in result.output
    assert result.output.strip().splitlines()[-1].startswith("fr beats dual:")
    record = json.loads(json_path.read_text())
    expected = compare_runs(*runs, n_bootstrap=200, seed=3).row("full", "uf1")
    full_uf1 = next(m for m in record["metrics"] if m["scope"] == "full" and m["metric"] == "uf1")
    assert full_uf1["interval"] == pytest.approx(list(expected.interval))
    assert full_uf1["se_difference"] == pytest.approx(expected.se_difference)
    assert record["verdict"].startswith("fr beats dual:") and record["seeds"] == [0, 1, 2]


def test_cli_refuses_mismatched_runs_with_one_line(tmp_path):
    a = write_run(tmp_path / "a", PRED_A)
    b = write_run(tmp_path / "b", {0: PRED_B[0]})
    result = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert result.exit_code == 1
    assert "different seeds" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["compare", str(a), str(tmp_path / "absent")])
    assert result.exit_code == 1 and "no such run folder" in result.output and "Traceback" not in result.output


def test_runs_written_by_fr_mer_evaluate(tmp_path, one_torch_thread):
    """Two real (tiny) runs: the per-seed UF1 the comparison reads back are metrics.json's."""
    import torch

    from fr_mer.evaluation import EvalConfig, run_evaluation
    from fr_mer.models import model_class
    from tests.cachefactory import small_composite

    cache, listing = small_composite(tmp_path, subjects_per_db=1, clips_per_class=1)
    recipe = model_class("ststnet").recipe.replace(epochs=1, batch_size=8)
    metrics = {}
    for name, lr in (("low", 1e-3), ("high", 1e-2)):
        config = EvalConfig(model="ststnet", recipe=recipe.replace(lr=lr), seeds=(0, 1),
                            composite_list=str(listing))
        metrics[name] = run_evaluation(cache, tmp_path / name, config, device=torch.device("cpu"))
    comparison = compare_runs(tmp_path / "low", tmp_path / "high", n_bootstrap=20)
    for scope in ("full", "casme2", "samm", "smic"):
        row = comparison.row(scope, "uf1")
        assert [round(v, 4) for v in row.a] == [metrics["low"][scope]["per_seed"][s]["uf1"] for s in ("0", "1")]
        assert [round(v, 4) for v in row.b] == [metrics["high"][scope]["per_seed"][s]["uf1"] for s in ("0", "1")]
    assert comparison.model_a == "ststnet" and comparison.row("full", "uf1").n_subjects == 3


def test_runs_of_another_label_space_are_compared_in_it(tmp_path):
    # Four classes (CAS(ME)^3's 4-class protocol): class 3 ("others") is predicted and scored.
    four = CLASSES + ("others",)
    samples = tuple((f"casme3/spNO.{s}/a/{k}", "casme3", f"spNO.{s}", k % 4) for s in (1, 2) for k in range(4))
    true = [t for *_, t in samples]
    a = {0: true, 1: true}
    b = {0: [(t + 1) % 4 if i == 3 else t for i, t in enumerate(true)], 1: true}
    run_a = write_run(tmp_path / "a", a, samples, protocol="loso", classes=four)
    run_b = write_run(tmp_path / "b", b, samples, protocol="loso", classes=four)
    comparison = compare_runs(run_a, run_b, n_bootstrap=50)
    row = comparison.row("full", "uf1")
    assert row.a == (1.0, 1.0)
    assert row.b[0] == pytest.approx(hand_uf1(true, b[0]), abs=1e-12) and row.b[1] == 1.0
    three = write_run(tmp_path / "c", {0: [t % 3 for t in true], 1: [t % 3 for t in true]},
                      tuple((k, d, s, t % 3) for k, d, s, t in samples), protocol="loso")
    with pytest.raises(FrMerError, match="different classes"):
        compare_runs(run_a, three)


def test_sign_counts_count_wins_each_way_and_ties_within_rounding():
    assert sign_counts((0.1, -0.2, 0.0, 1e-13, -1e-13, 0.3)) == (2, 1, 3)
    assert sign_counts(()) == (0, 0, 0)
