"""The per-database tables of docs/benchmarks.md section 6 (`lodo`, `megc2018-cde`), from finished runs.

Each RUN is the ``--out`` folder of one ``fr-mer evaluate`` run (its ``metrics.json``). Prints one
Markdown row per (run, scope): the held-out database's pooled predictions for ``lodo``, each
database's slice for the subject-fold protocols, then all predictions pooled; mean ± sd over seeds
(sample sd, as ``metrics.json``) and each seed's UF1 / UAR.

    python benchmarks/protocol_table.py benchmarks/results/lodo/fr
    python benchmarks/protocol_table.py benchmarks/results/lodo/synthetic benchmarks/results/megc2018-cde/synthetic
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fr_mer.metrics import mean_sd_text
from fr_mer.pipeline.labels import DATABASES

#: How the table names a scope of ``metrics.json``: under ``lodo`` each database is a held-out fold.
DATABASE_NAMES = {"casme2": "CASME II", "samm": "SAMM", "smic": "SMIC-HS"}


def scope_name(protocol: str, scope: str) -> str:
    if scope == "full":
        return "pooled (3 folds)" if protocol == "lodo" else "pooled"
    return f"{DATABASE_NAMES[scope]} held out" if protocol == "lodo" else DATABASE_NAMES[scope]


def rows(run: Path) -> list[str]:
    metrics = json.loads((run / "metrics.json").read_text())
    protocol = metrics["protocol"]
    lines = []
    for scope in (*DATABASES, "full"):
        block = metrics.get(scope)
        if not block or not block.get("n"):
            continue
        seeds = sorted(block["per_seed"], key=int)
        per_seed = ", ".join(f"{block['per_seed'][s]['uf1']:.4f} / {block['per_seed'][s]['uar']:.4f}" for s in seeds)
        lines.append(f"| `{protocol}` | {scope_name(protocol, scope)} | {block['n']} | "
                     f"{mean_sd_text(block['uf1'], block['uf1_std'])} | "
                     f"{mean_sd_text(block['uar'], block['uar_std'])} | {per_seed} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="fr-mer evaluate --out folders")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "metrics.json").is_file()]
    if missing:
        parser.error(f"no metrics.json in {', '.join(missing)}: give finished `fr-mer evaluate --out` folders")
    print("| protocol | scope | n | UF1 (mean ± sd) | UAR (mean ± sd) | per seed UF1 / UAR |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        print("\n".join(rows(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
