"""The development-benchmark table (docs/benchmarks-devbench.md) from the stored results.

Reads benchmarks/results/devbench/: the variant sweeps of benchmarks/devbench.py (``*/rows.json``)
and the `fr-mer probe` / `fr-mer evaluate` results folders (``*/metrics.json``), and prints the
Markdown tables. Nothing is recomputed: every figure comes from a stored predictions file's run.

    python benchmarks/devbench_table.py [benchmarks/results/devbench]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fr_mer.metrics import mean_sd_text


def sweep_table(folder: Path) -> list[str]:
    record = json.loads((folder / "rows.json").read_text())
    lines = [f"### {folder.name}: {record['n_clips']} clips, {record['cpu']}, {record['date']}", "",
             "| flow (crop-eye distance-size) | head motion | normalisation | channels | probe UF1 | probe UAR |",
             "|---|---|---|---|---:|---:|"]
    order = ("flow", "head_motion", "normalisation", "channels")
    for row in sorted(record["rows"], key=lambda r: tuple(r[k] for k in order)):
        lines.append(f"| {row['flow']} | {row['head_motion']} | {row['normalisation']} | {row['channels']} | "
                     f"{row['uf1']:.4f} | {row['uar']:.4f} |")
    seconds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(record["seconds_per_sample_median"].items()))
    return lines + ["", f"Median seconds per sample and stage: {seconds}.", ""]


def runs_table(folders: list[Path]) -> list[str]:
    lines = ["| run | model | recipe | seeds | UF1 (mean ± sd) | UAR (mean ± sd) | per-seed UF1 |",
             "|---|---|---|---|---|---|---|"]
    for folder in folders:
        m = json.loads((folder / "metrics.json").read_text())
        recipe = m.get("recipe", {})
        if m["model"] == "probe":
            what = f"C {recipe.get('C')}, {','.join(recipe.get('channels', []))}"
        else:
            what = (f"{recipe.get('epochs')} epochs, batch {recipe.get('batch_size')}, "
                    f"min_steps {recipe.get('min_steps')}")
        full = m["full"]
        per_seed = ", ".join(f"{v['uf1']:.4f}" for v in full["per_seed"].values())
        lines.append(f"| {folder.name} | {m['model']} | {what} | {len(m['seeds'])} | "
                     f"{mean_sd_text(full['uf1'], full['uf1_std'])} | {mean_sd_text(full['uar'], full['uar_std'])} | "
                     f"{per_seed} |")
    return lines + [""]


def fold_predictions(folder: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """subject -> {sample: (true, predicted)} of a results folder: its fold files (seed 0), or its
    predictions.csv (a probe)."""
    import csv

    from fr_mer.pipeline.labels import CLASSES

    by_subject: dict[str, dict[str, tuple[int, int]]] = {}
    folds = sorted((folder / "folds" / "seed0").glob("*.json"))
    if folds:
        for path in folds:
            fold = json.loads(path.read_text())
            by_subject[fold["subject"]] = {k: (t, p) for k, t, p in zip(fold["keys"], fold["true"], fold["pred"])}
        return by_subject
    with open(folder / "predictions.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            by_subject.setdefault(row["subject"], {})[row["sample"]] = (
                CLASSES.index(row["true"]), CLASSES.index(row["predicted"]))
    return by_subject


def common_folds_table(folders: list[Path]) -> list[str]:
    """UF1/UAR of each run on the held-out subjects every run finished (runs stopped early compare
    on the same subjects)."""
    from fr_mer.metrics import uar, uf1

    runs = {folder.name: fold_predictions(folder) for folder in folders}
    common = sorted(set.intersection(*(set(r) for r in runs.values())))
    lines = [f"Held-out subjects finished by every run: {len(common)} ({', '.join(common)}).", "",
             "| run | samples | UF1 | UAR |", "|---|---:|---:|---:|"]
    for name, by_subject in runs.items():
        pairs = [pair for subject in common for pair in by_subject[subject].values()]
        true, pred = [t for t, _ in pairs], [p for _, p in pairs]
        lines.append(f"| {name} | {len(pairs)} | {uf1(true, pred):.4f} | {uar(true, pred):.4f} |")
    return lines + [""]


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "devbench"
    lines = []
    for folder in sorted(p.parent for p in root.glob("*/rows.json")):
        lines += sweep_table(folder)
    runs = sorted(p.parent for p in root.glob("*/metrics.json"))
    if runs:
        lines += ["### fr-mer probe and fr-mer evaluate on caches of the development set", ""] + runs_table(runs)
    paired = sorted(p.parent for p in root.glob("*/paired.txt"))
    for marker in paired:
        names = marker.joinpath("paired.txt").read_text().split()
        lines += [f"### {marker.name}", ""] + common_folds_table([root / n for n in names])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
