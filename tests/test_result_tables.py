"""The scripts that make docs/benchmarks.md's tables from benchmarks/results/: seeds run in separate
folders pooled (against an independent computation), a seed given twice refused, and the tables in
the docs equal to what the scripts print from the archived runs."""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

from fr_mer.models import model_class
from fr_mer.models.base import batches_per_epoch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name.replace('/', '_')}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def metrics(model: str, per_seed: dict[int, tuple[float, float]]) -> dict:
    """A composite metrics.json with the given per-seed (UF1, UAR), the same in every scope."""
    block = {"per_seed": {str(s): {"uf1": f, "uar": r} for s, (f, r) in per_seed.items()}, "n": 442,
             "uf1": 0.0, "uar": 0.0, "uf1_std": 0.0, "uar_std": 0.0}
    return {"protocol": "composite", "model": model, "options": {}, "recipe": {"epochs": 20},
            "weights": None, "seeds": sorted(per_seed),
            **{scope: block for scope in ("full", "casme2", "samm", "smic")}}


def test_composite_table_pools_seeds_run_apart():
    table = script("composite_table")
    first = metrics("fr", {0: (0.70, 0.71)})
    rest = metrics("fr", {1: (0.74, 0.72), 2: (0.72, 0.69)})
    other = metrics("dual_inception", {0: (0.69, 0.70)})
    pooled = table.pool([(Path("fr"), first), (Path("dual"), other), (Path("fr-s1"), rest)])
    assert [m["model"] for _, m in pooled] == ["fr", "dual_inception"]
    fr = pooled[0][1]
    assert fr["seeds"] == [0, 1, 2]
    assert fr["full"]["uf1"] == pytest.approx(statistics.fmean([0.70, 0.74, 0.72]))
    assert fr["full"]["uf1_std"] == pytest.approx(statistics.stdev([0.70, 0.74, 0.72]))
    assert fr["samm"]["uar_std"] == pytest.approx(statistics.stdev([0.71, 0.72, 0.69]))
    assert first["full"]["per_seed"].keys() == {"0"}  # the inputs are not changed
    with pytest.raises(SystemExit, match="both hold seed 0 of fr"):
        table.pool([(Path("fr"), first), (Path("fr-again"), metrics("fr", {0: (0.7, 0.7)}))])
    longer = {**metrics("fr", {1: (0.7, 0.7)}), "recipe": {"epochs": 40}}
    assert len(table.pool([(Path("fr"), first), (Path("fr-e40"), longer)])) == 2  # other recipe, other row


def audit_run(folder: Path, model: str, per_seed: dict[int, tuple[float, float]]) -> None:
    folder.mkdir(parents=True)
    figures = {key: {"full": {"per_seed": {str(s): {"uf1": f + bonus, "uar": r} for s, (f, r) in per_seed.items()}}}
               for key, bonus in (("last_epoch", 0.0), ("best_epoch_per_subject", 0.1), ("best_single_epoch", 0.0))}
    (folder / "selection_audit.json").write_text(json.dumps(
        {"model": model, "seeds": sorted(per_seed), **figures,
         "selected_epochs": {str(s): {"best_single_epoch": 20} for s in per_seed}}))
    (folder / "metrics.json").write_text(json.dumps({"environment": {"cpu": "X", "cpu_vector_extension": "avx2"}}))


def test_audit_table_pools_seeds_run_apart(tmp_path):
    table = script("audit_table")
    audit_run(tmp_path / "fr", "fr", {0: (0.70, 0.71)})
    audit_run(tmp_path / "fr-s1", "fr", {1: (0.74, 0.72), 2: (0.72, 0.69)})
    models = table.load_models(tmp_path)
    last = models["fr"]["figures"]["last_epoch"]["full"]
    assert sorted(last) == ["0", "1", "2"]
    uf1, sd, uar = table.summary(last)
    assert (uf1, sd, uar) == pytest.approx((statistics.fmean([0.70, 0.74, 0.72]), statistics.stdev([0.70, 0.74, 0.72]),
                                            statistics.fmean([0.71, 0.72, 0.69])))
    audit_run(tmp_path / "fr-again", "fr", {2: (0.6, 0.6)})
    with pytest.raises(SystemExit, match="seed 2 of fr is also in another folder"):
        table.load_models(tmp_path)


DOCS = (ROOT / "docs" / "benchmarks.md").read_text().splitlines()


def missing_from_docs(printed: str) -> list[str]:
    """The lines of a script's output that docs/benchmarks.md does not hold, word for word (its own
    headings aside: the docs give the tables theirs)."""
    return [line for line in printed.splitlines()
            if line.strip() and not line.startswith("#") and line not in DOCS]


@pytest.mark.parametrize("name, argv", [
    ("composite_table", [str(RESULTS / "composite" / "ststnet_released_run"),
                         *sorted(str(p) for p in (RESULTS / "audit").iterdir() if p.is_dir())]),
    ("audit_table", [str(RESULTS / "audit")]),
    ("protocol_table", [str(RESULTS / run) for run in ("lodo/fr", "lodo/ststnet", "lodo/synthetic",
                                                       "megc2018-cde/synthetic")]),
])
def test_docs_tables_are_what_the_scripts_print_from_the_archive(name, argv, capsys):
    assert script(name).main(argv) == 0
    assert missing_from_docs(capsys.readouterr().out) == []


def test_docs_ablation_table_is_what_the_script_prints_from_the_archive():
    ablation = script("fr_ablation")
    printed = ablation.markdown(ablation.summarise(RESULTS / "fr_ablation"))
    assert "| di |" in printed
    assert missing_from_docs(printed) == []


def test_ablation_e40_rows_train_twice_the_steps_of_their_base_at_every_fold_size():
    # The rows once doubled the epochs only: under the recipe's 80-step floor a fold of fewer
    # than 385 samples already ran 40 epochs, and those folds repeated the 20-epoch result.
    ablation = script("fr_ablation")
    pairs = [(name, name[:-4]) for name in ablation.VARIANTS if name.endswith("_e40")]
    assert sorted(pairs) == [("di_e40", "di"), ("fr_propgate_e40", "fr_propgate")]
    for longer, base in pairs:
        recipes = [model_class(ablation.VARIANTS[v].model).recipe.replace(**ablation.VARIANTS[v].recipe)
                   for v in (longer, base)]
        for n_train in range(2, 437):
            steps = [r.for_training_size(n_train).epochs * batches_per_epoch(n_train, r.batch_size)
                     for r in recipes]
            assert steps[0] == 2 * steps[1], (longer, n_train, steps)


def test_real_benchmark_tables_are_what_the_script_prints_from_the_archive(capsys):
    """docs/benchmarks-real.md holds, line for line, the tables benchmarks/realdev_table.py prints from
    benchmarks/results/realdev/ (the doc gives them its own headings)."""
    assert script("realdev_table").main([str(RESULTS / "realdev")]) == 0
    printed = capsys.readouterr().out
    doc = set((ROOT / "docs" / "benchmarks-real.md").read_text().splitlines())
    assert "| `fr-mer preprocess` defaults |" in printed
    assert [line for line in printed.splitlines() if line.strip() and not line.startswith("#")
            and line not in doc] == []


def test_synthetic_table_is_what_the_script_prints_from_the_archive():
    """docs/benchmarks-models.md holds, line for line, the synthetic-amplitude table that
    benchmarks/results/models/synthetic_table.py prints from the archived runs."""
    printed = script("results/models/synthetic_table").rows()
    assert any("`meranet`" in line for line in printed)
    doc = set((ROOT / "docs" / "benchmarks-models.md").read_text().splitlines())
    assert [line for line in printed if line not in doc] == []


def test_seed_model_tables_are_what_the_script_prints_from_the_archive(capsys):
    """docs/benchmarks-models.md holds the real-data table of the seed methods, docs/benchmarks.md the
    FR head decision, line for line as benchmarks/seed_models_table.py prints them from the archive."""
    table = script("seed_models_table")
    for which, doc in (("models", "benchmarks-models.md"), ("heads", "benchmarks.md")):
        assert table.main([which, str(RESULTS / "models" / "real-dev")]) == 0
        printed = [line for line in capsys.readouterr().out.splitlines() if line]
        held = set((ROOT / "docs" / doc).read_text().splitlines())
        assert len(printed) > 3 and [line for line in printed if line not in held] == []


def test_seed_model_table_pairs_seeds_and_leaves_a_resumed_run_without_cpu_time():
    table = script("seed_models_table")
    a, b = {"0": 0.70, "1": 0.74, "2": 0.72}, {"0": 0.69, "1": 0.70, "2": 0.73, "3": 0.9}
    diffs = [0.70 - 0.69, 0.74 - 0.70, 0.72 - 0.73]  # seed 3 has no pair
    se = statistics.stdev(diffs) / 3 ** 0.5
    assert table.paired(a, b) == f"{statistics.fmean(diffs):+.4f} ± {se:.4f} (2 of 3 ahead)"
    assert table.paired({"0": 0.7}, b) == "-"
    assert table.cpu_per_seed({"cpu_seconds_this_invocation": 300.0, "folds_resumed": 0}, 3) == "100"
    assert table.cpu_per_seed({"cpu_seconds_this_invocation": 4.0, "folds_resumed": 42}, 3) == "not recorded (resumed)"
