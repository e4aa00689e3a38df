"""The composite table of docs/benchmarks.md, from finished ``fr-mer evaluate`` runs.

Each RUN is the ``--out`` folder of one ``fr-mer evaluate --protocol composite``
run, or a copy of its ``metrics.json`` (the means, spreads and per-seed
figures). docs/benchmarks.md's table is made from the archived runs:
``benchmarks/results/composite/ststnet_released_run`` and ``benchmarks/results/audit/*/``.
Prints one Markdown row per run beside the published figures of the method
(``../shared/specs/fr-model.md``), then the per-seed UF1 of every run so that
models can be compared seed by seed.

Runs of one model and settings whose seeds were run apart (``--first-seed``, another
session) are pooled into one row: their per-seed figures are merged and the mean and
sd (sample sd, as ``metrics.json``) recomputed over all of them; a seed given twice is
an error.

    python benchmarks/composite_table.py runs/ststnet runs/dual_inception runs/off_apexnet runs/fr
    python benchmarks/composite_table.py benchmarks/results/audit/*/
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fr_mer.pipeline.labels import DATABASES

#: Published MEGC2019 composite figures, (UF1, UAR) for full, CASME II, SAMM, SMIC.
PUBLISHED = {
    "fr": {"full": (0.7838, 0.7832), "casme2": (0.8915, 0.8873), "samm": (0.7372, 0.7155), "smic": (0.7011, 0.7083)},
    "dual_inception": {"full": (0.7322, 0.7278), "casme2": (0.8621, 0.8560), "samm": (0.5868, 0.5663),
                       "smic": (0.6645, 0.6726)},
    "ststnet": {"full": (0.7353, 0.7605), "casme2": (0.8382, 0.8686), "samm": (0.6588, 0.6810),
                "smic": (0.6801, 0.7013)},
    "off_apexnet": {"full": (0.7196, 0.7096), "casme2": (0.8764, 0.8681), "samm": (0.5409, 0.5392),
                    "smic": (0.6817, 0.6695)},
}
SCOPES = ("full",) + DATABASES  # every prediction pooled, then the composite's databases


def _mean_sd(block: dict, metric: str) -> str:
    sd = block.get(f"{metric}_std")
    return f"{block[metric]:.4f}" if sd is None or len(block["per_seed"]) < 2 else f"{block[metric]:.4f} ± {sd:.4f}"


def load(run: Path) -> dict:
    path = run if run.suffix == ".json" else run / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; finish the run first (`fr-mer evaluate ... --out {run}` resumes it)")
    return json.loads(path.read_text())


def pool(runs: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """One entry per (model, options, recipe, weights), in first-seen order, seeds merged."""
    pooled: dict[str, tuple[Path, dict]] = {}
    for run_dir, metrics in runs:
        key = json.dumps([metrics.get(k) for k in ("model", "options", "recipe", "weights")], sort_keys=True)
        if key not in pooled:
            pooled[key] = (run_dir, json.loads(json.dumps(metrics)))
            continue
        first_dir, merged = pooled[key]
        repeated = sorted(set(merged["full"]["per_seed"]) & set(metrics["full"]["per_seed"]), key=int)
        if repeated:
            raise SystemExit(f"{run_dir} and {first_dir} both hold seed {', '.join(repeated)} of "
                             f"{metrics['model']}; give each seed once")
        merged["seeds"] = sorted(merged["seeds"] + metrics["seeds"])
        for scope in SCOPES:
            per_seed = {**merged[scope]["per_seed"], **metrics[scope]["per_seed"]}
            per_seed = dict(sorted(per_seed.items(), key=lambda item: int(item[0])))
            block = {"per_seed": per_seed, "n": merged[scope].get("n")}
            for metric in ("uf1", "uar"):
                values = [v[metric] for v in per_seed.values()]
                block[metric] = statistics.fmean(values)
                block[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            merged[scope] = block
    return list(pooled.values())


def rows(runs: list[tuple[Path, dict]]) -> list[str]:
    lines = [
        "| model | run | seeds | full UF1 (mean ± sd) | full UAR (mean ± sd) "
        "| CASME II UF1 / UAR | SAMM UF1 / UAR | SMIC UF1 / UAR | published full UF1 / UAR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run_dir, metrics in runs:
        model = metrics["model"]
        how = "released weights" if metrics.get("weights") else f"retrained, {metrics['recipe']['epochs']} epochs"
        seeds = "–" if metrics.get("weights") else ", ".join(str(s) for s in metrics["seeds"])
        per_db = [f"{metrics[s]['uf1']:.4f} / {metrics[s]['uar']:.4f}" for s in SCOPES[1:]]
        published = PUBLISHED.get(model, {}).get("full")
        published_cell = f"{published[0]:.4f} / {published[1]:.4f}" if published else "–"
        full = [_mean_sd(metrics["full"], "uf1"), _mean_sd(metrics["full"], "uar")]
        lines.append("| " + " | ".join([f"`{model}`", how, seeds, *full, *per_db, published_cell]) + " |")
    return lines


def per_seed(runs: list[tuple[Path, dict]]) -> list[str]:
    seeds = sorted({s for _, m in runs if not m.get("weights") for s in m["full"]["per_seed"]}, key=int)
    lines = ["| model | " + " | ".join(f"seed {s} UF1 / UAR" for s in seeds) + " |",
             "|---|" + "---|" * len(seeds)]
    for _, metrics in runs:
        if metrics.get("weights"):
            continue
        cells = []
        for s in seeds:
            figures = metrics["full"]["per_seed"].get(s)
            cells.append(f"{figures['uf1']:.4f} / {figures['uar']:.4f}" if figures else "–")
        lines.append(f"| `{metrics['model']}` | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="results folders of fr-mer evaluate (composite), or their metrics.json files")
    args = parser.parse_args(argv)
    runs = [(run_dir, load(run_dir)) for run_dir in args.runs]
    for run_dir, metrics in runs:
        if metrics.get("protocol") != "composite":
            raise SystemExit(f"{run_dir}: protocol {metrics.get('protocol')!r}, this table is for composite runs")
    runs = pool(runs)
    print("\n".join(rows(runs)))
    print()
    print("\n".join(per_seed(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
