"""The ablations that chose FR's defaults, reproducible: ``python benchmarks/fr_ablation.py``.

Two stages, on different folds *and* different seeds, so that the figures
reported for the chosen defaults are not the ones that chose them:

1. ``--protocol cv5`` (search): subject-grouped 5-fold cross-validation of the
   442 composite samples (subjects dealt to folds at random, database by
   database), seeds 100, 101, 102 by default; each seed also re-deals the
   folds. Five trainings per seed instead of 68, so many variants fit in the
   CPU budget. Defaults are chosen on the mean over seeds.
2. ``--protocol composite`` (report): the MEGC2019 68-subject LOSO with the
   same training code, fold seeds and metrics as ``fr-mer evaluate`` (seeds
   0, 1, 2 by default), for the chosen default, Dual-Inception and the
   variants the table names.

Every row is a variant from :data:`VARIANTS` (model, options, recipe); each
(variant, protocol, seed, fold) result is a JSON file under ``--out`` so an
interrupted run resumes, and ``--table`` prints the Markdown table of what is
there. Examples::

    python benchmarks/fr_ablation.py --protocol cv5 --variants di fr_naive fr_spatial --threads 1
    python benchmarks/fr_ablation.py --protocol composite --variants di fr --seeds 0 1 2
    python benchmarks/fr_ablation.py --table

The data is the cache made by ``fr-mer import-ststnet`` from the released
composite inputs (``--cache``, default /tmp/megc2019.h5).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fr_mer import atomic
from fr_mer.data import load_dataset, resolve_device
from fr_mer.evaluation import EvalConfig, FoldResult, run_evaluation, run_fold
from fr_mer.metrics import pooled_metrics, uar, uf1
from fr_mer.models import create_model, model_class
from fr_mer.pipeline.labels import DATABASES
from fr_mer.protocols import Fold, subject_folds
from fr_mer.run_plan import FoldJob, make_plan


@dataclasses.dataclass(frozen=True)
class Variant:
    model: str
    options: dict
    recipe: dict = dataclasses.field(default_factory=dict)  # overrides of the model's recipe
    note: str = ""


#: The options every FR variant below starts from (explicit, so that a later
#: change of the model's defaults does not change what a stored result means).
FR_BASE = {"channels": ("u", "v"), "attention": "spatial", "branch_dim": 256, "fusion": "concat",
           "proposal_loss": "bce", "proposal_weight": 1.0, "dropout": 0.0, "normalise": "range"}
DI_BASE = {"channels": ("u", "v"), "dropout": 0.0, "normalise": "range"}


#: The recipe change of the ``*_e40`` rows: both the epochs and the step floor of the 20-epoch recipe
#: (80 steps, :meth:`Recipe.for_training_size`) doubled. Doubling the epochs alone is not twice the
#: training: a cv5 fold of fewer than 385 samples already runs 40 epochs under the 80-step floor, so
#: ``{"epochs": 40}`` (which turns the floor off) repeated the 20-epoch result on those folds.
TWICE_THE_TRAINING = {"epochs": 40, "min_steps": 160}


def fr(**changes) -> dict:
    return {**FR_BASE, **changes}


def di(**changes) -> dict:
    return {**DI_BASE, **changes}


#: What was compared. ``fr`` is whatever the model's defaults are now.
VARIANTS: dict[str, Variant] = {
    "di": Variant("dual_inception", di(), note="FR's backbone with the plain head (no proposal module)"),
    "di_strain": Variant("dual_inception", di(channels=("u", "v", "strain")), note="+ strain stream"),
    "di_drop": Variant("dual_inception", di(dropout=0.5), note="plain head, dropout 0.5 before the classifier"),
    "di_aug": Variant("dual_inception", di(), {"augment": True}, note="+ left-right mirroring"),
    "di_bal": Variant("dual_inception", di(), {"class_balanced": True}, note="+ class-balanced batches"),
    "di_e40": Variant("dual_inception", di(), TWICE_THE_TRAINING,
                      note="twice the training: 40 epochs, 160 steps at least"),
    "di_med": Variant("dual_inception", di(normalise="median"), note="inputs centred on their median"),
    "off_apexnet": Variant("off_apexnet", {}, note="OFF-ApexNet with its default recipe (a sanity check)"),
    "fr": Variant("fr", {}, note="fr with its current defaults"),
    "fr_naive": Variant("fr", fr(attention="scalar"), note="the spec's naive head: sigmoid scalar gate per branch"),
    "fr_naive_med": Variant("fr", fr(attention="scalar", normalise="median"),
                            note="attention=scalar, median-centred inputs"),
    "fr_spatial": Variant("fr", fr(), note="attention=spatial"),
    "fr_channel": Variant("fr", fr(attention="channel"), note="attention=channel"),
    "fr_propgate": Variant("fr", fr(attention="proposal"),
                           note="FR's default: attention=proposal, each class branch gated by its own "
                                "proposal probability"),
    "fr_propgate_e40": Variant("fr", fr(attention="proposal"), TWICE_THE_TRAINING,
                               note="FR's default, twice the training: 40 epochs, 160 steps at least"),
    "fr_propgate_aug": Variant("fr", fr(attention="proposal"), {"augment": True},
                               note="FR's default + left-right mirroring"),
    "fr_propgate_noprop": Variant("fr", fr(attention="proposal", proposal_loss="none"),
                                  note="the gated head trained without the proposal loss (gates learn "
                                       "through the classifier only)"),
    "fr_noatt": Variant("fr", fr(attention="none"), note="attention=none"),
    "fr_spatial_noprop": Variant("fr", fr(proposal_loss="none"), note="attention=spatial, no proposal loss"),
    "fr_spatial_bal": Variant("fr", fr(proposal_loss="balanced_bce"),
                              note="attention=spatial, class-balanced BCE proposal loss"),
    "fr_spatial_sum": Variant("fr", fr(fusion="sum"), note="attention=spatial, branches summed"),
    "fr_spatial_drop": Variant("fr", fr(dropout=0.5), note="attention=spatial, dropout 0.5"),
    "fr_spatial_strain": Variant("fr", fr(channels=("u", "v", "strain")), note="attention=spatial + strain stream"),
}

SEARCH_SEEDS = (100, 101, 102)
REPORT_SEEDS = (0, 1, 2)


def grouped_folds(databases: np.ndarray, subjects: np.ndarray, k: int, seed: int) -> list[Fold]:
    """Subject-grouped k folds: each database's subjects shuffled and dealt round-robin.

    Dealing database by database keeps every fold's database mix close to the
    composite's; no subject is on both sides of a fold.
    """
    rng = np.random.default_rng(seed)
    fold_of: dict[tuple[str, str], int] = {}
    offset = 0
    for database in DATABASES:
        ids = sorted({s for d, s in zip(databases, subjects) if d == database})
        for j, subject in enumerate(rng.permutation(ids)):
            fold_of[(database, str(subject))] = (offset + j) % k
        offset += len(ids)
    assignment = np.array([fold_of[(d, s)] for d, s in zip(databases, subjects)])
    everything = np.arange(len(subjects))
    return [Fold("mixed", f"cv{i}", everything[assignment == i], everything[assignment != i]) for i in range(k)]


def run_variant(name: str, protocol: str, seeds: tuple[int, ...], cache: Path, out: Path,
                device: torch.device, log) -> list[FoldResult]:
    variant = VARIANTS[name]
    # JSON form (tuples as lists), as a resumed run reads its config back.
    model_name, options = variant.model, json.loads(json.dumps(variant.options))
    recipe = model_class(model_name).recipe.replace(**variant.recipe)
    config = EvalConfig(model=model_name, protocol="composite", options=options, recipe=recipe, seeds=seeds)
    inputs = create_model(model_name, **options).inputs  # per instance: a strain option adds a channel
    if protocol == "composite" and inputs == model_class(model_name).inputs:
        # Exactly `fr-mer evaluate --protocol composite` (same code, layout and reports).
        run_evaluation(cache, out / protocol / name, config, device=device,
                       on_fold=lambda r, resumed: resumed or log(_fold_line(name, protocol, r)))
        return []
    data = load_dataset(cache, inputs, device, protocol="composite")
    plan = make_plan(config, cache)
    results: list[FoldResult] = []
    for seed in seeds:
        if protocol == "composite":
            folds = subject_folds(data.databases, data.subjects)
            seed_dir = out / protocol / name / "folds" / f"seed{seed}"
        else:
            folds = grouped_folds(data.databases, data.subjects, 5, seed)
            seed_dir = out / protocol / name / f"seed{seed}"
        for index, fold in enumerate(folds):
            path = seed_dir / f"{fold.database}-{fold.name}.json"
            if path.exists():
                results.append(FoldResult(**json.loads(path.read_text())))
                continue
            result = run_fold(plan, data, FoldJob(seed, index, fold))
            atomic.write_text(path, json.dumps(dataclasses.asdict(result)))
            results.append(result)
            log(_fold_line(name, protocol, result))
        seed_results = [r for r in results if r.seed == seed]
        m = pooled_metrics(seed_results)
        log(f"== {name} {protocol} seed {seed}: UF1 {m['uf1']:.4f} UAR {m['uar']:.4f} "
            f"({sum(r.seconds for r in seed_results):.0f} s of training)")
    return results


def _fold_line(name: str, protocol: str, r: FoldResult) -> str:
    right = sum(int(t == p) for t, p in zip(r.true, r.pred))
    return (f"{name} {protocol} seed {r.seed} {r.database}/{r.subject}: {r.seconds:.1f} s, "
            f"loss {r.train_loss:.3f}, {right}/{len(r.true)} right")


def _pooled(results: list[FoldResult], database: str | None) -> dict[str, float]:
    """UF1/UAR of the pooled predictions, on one database's samples (from the sample keys) or all."""
    pairs = [(t, p) for r in results for k, t, p in zip(r.keys, r.true, r.pred)
             if database is None or k.split("/", 1)[0] == database]
    true, pred = [t for t, _ in pairs], [p for _, p in pairs]
    return {"uf1": uf1(true, pred), "uar": uar(true, pred), "n": len(pairs)}


def summarise(out: Path) -> list[dict]:
    """Mean, sd and per-seed figures of every finished (variant, protocol, seed) under ``out``."""
    rows = []
    for protocol_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        for variant_dir in sorted(p for p in protocol_dir.iterdir() if p.is_dir()):
            per_seed, seconds = {}, {}
            expected = 68 if protocol_dir.name == "composite" else 5
            for seed_dir in sorted([*variant_dir.glob("seed*"), *variant_dir.glob("folds/seed*")]):
                folds = [FoldResult(**json.loads(p.read_text())) for p in sorted(seed_dir.glob("*.json"))]
                if len(folds) != expected:
                    continue
                seed = int(seed_dir.name[4:])
                per_seed[seed] = {scope: _pooled(folds, None if scope == "full" else scope)
                                  for scope in ("full",) + DATABASES}
                seconds[seed] = sum(r.seconds for r in folds)
            if not per_seed:
                continue
            row = {"protocol": protocol_dir.name, "variant": variant_dir.name, "seeds": sorted(per_seed),
                   "train_seconds_per_seed": statistics.fmean(seconds.values())}
            for scope in ("full",) + DATABASES:
                for metric in ("uf1", "uar"):
                    values = [per_seed[s][scope][metric] for s in sorted(per_seed)]
                    row[f"{scope}_{metric}"] = statistics.fmean(values)
                    row[f"{scope}_{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
                    row[f"{scope}_{metric}_per_seed"] = values
            rows.append(row)
    return rows


def markdown(rows: list[dict], baseline: str = "di") -> str:
    """One table per protocol. UF1 and UAR are mean ± sd over seeds; Δ is the mean ± se over the
    seeds shared with ``baseline`` of the per-seed UF1 difference (same folds, same fold seeds)."""
    lines = []
    for protocol in ("cv5", "composite"):
        chosen = [r for r in rows if r["protocol"] == protocol]
        if not chosen:
            continue
        base = next((r for r in chosen if r["variant"] == baseline), None)
        lines += [f"### {protocol}", "",
                  "| variant | what it is | seeds | UF1 (mean ± sd) | UAR (mean ± sd) | ΔUF1 vs " + baseline
                  + " (paired, mean ± se) | CASME II UF1 | SAMM UF1 | SMIC UF1 | per-seed UF1 | train s/seed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(chosen, key=lambda r: -r["full_uf1"]):
            delta = ""
            if base is not None and r is not base:
                shared = [s for s in r["seeds"] if s in base["seeds"]]
                diffs = [r["full_uf1_per_seed"][r["seeds"].index(s)] - base["full_uf1_per_seed"][base["seeds"].index(s)]
                         for s in shared]
                if diffs:
                    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
                    ahead = sum(d > 0 for d in diffs)
                    delta = f"{statistics.fmean(diffs):+.4f} ± {se:.4f} ({ahead} of {len(diffs)} ahead)"
            variant = VARIANTS.get(r["variant"])
            lines.append(
                f"| {r['variant']} | {variant.note if variant else ''} | {','.join(map(str, r['seeds']))} | "
                f"{r['full_uf1']:.4f} ± {r['full_uf1_sd']:.4f} | {r['full_uar']:.4f} ± {r['full_uar_sd']:.4f} | "
                f"{delta} | {r['casme2_uf1']:.4f} | {r['samm_uf1']:.4f} | {r['smic_uf1']:.4f} | "
                f"{', '.join(f'{v:.4f}' for v in r['full_uf1_per_seed'])} | {r['train_seconds_per_seed']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/megc2019.h5"), help="composite cache (import-ststnet)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fr-ablation"), help="results folder (resumable)")
    parser.add_argument("--protocol", choices=("cv5", "composite"), default="cv5",
                        help="cv5: search protocol; composite: the 68-fold LOSO report protocol")
    parser.add_argument("--variants", nargs="+", default=[], choices=sorted(VARIANTS), help="variants to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help=f"seeds (default: {SEARCH_SEEDS} for cv5, {REPORT_SEEDS} for composite)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of finished results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.variants and not args.table:
        parser.error("name --variants to run, or --table")
    if args.variants and not args.cache.is_file():
        parser.error(f"--cache {args.cache}: no such file; make it with `fr-mer import-ststnet` "
                     "from ../shared/data/megc2019")
    seeds = tuple(args.seeds) if args.seeds else (SEARCH_SEEDS if args.protocol == "cv5" else REPORT_SEEDS)
    device = resolve_device(args.device)

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)

    for name in args.variants:
        started = time.perf_counter()
        run_variant(name, args.protocol, seeds, args.cache, args.out, device, log)
        log(f"{name} {args.protocol} done in {time.perf_counter() - started:.0f} s wall")
    if args.table and args.out.is_dir():
        rows = summarise(args.out)
        (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
