"""The real development benchmark's tables (docs/benchmarks-real.md) from the stored results.

Reads what ``benchmarks/realdev.py`` and ``benchmarks/realbench.py`` wrote (every figure from a
run whose predictions are stored): per pipeline variant, the probe and FR results folders, the
preprocess record, and the paired comparisons (``compare-*.json`` of ``fr-mer compare``); the
stage-by-stage probe sweep (``realbench/rows.json``). Nothing is recomputed.

    python benchmarks/realdev_table.py [benchmarks/results/realdev]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fr_mer.metrics import mean_sd_text

#: Row order and description of each variant folder (others follow, by name).
DESCRIPTIONS = {
    "default": "`fr-mer preprocess` defaults",
    "template": "`--align crop=template` (the eye template: the default before this benchmark)",
    "template-minmax": "`--align crop=template --normalisation minmax255`",
    "frame-128": "`--flow-size 128`",
    "frame-no-head-motion": "`--head-motion none`",
    "frame-minmax": "`--normalisation minmax255`",
    "released-ststnet": "STSTNet's released 28x28 images of the same samples (`fr-mer import-ststnet`)",
}

#: The sweep's row that is the plain reference pipeline.
PLAIN = "plain-256|nose_median|none"


def _metrics(folder: Path) -> dict | None:
    path = folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _probe(folder: Path) -> str:
    m = _metrics(folder)
    return "–" if m is None else f"{m['full']['uf1']:.4f} / {m['full']['uar']:.4f}"


def _fr(folder: Path) -> tuple[str, str, str]:
    m = _metrics(folder)
    if m is None:
        return "–", "–", "–"
    full = m["full"]
    per_seed = ", ".join(f"{v['uf1']:.4f}" for v in full["per_seed"].values())
    # one seed: its sd is unknown (null), the mean alone
    return (mean_sd_text(full["uf1"], full["uf1_std"]), mean_sd_text(full["uar"], full["uar_std"]),
            f"{len(m['seeds'])}: {per_seed}")


def _variants(results: Path) -> list[Path]:
    folders = [p for p in results.iterdir() if p.is_dir() and (p / "probe-uvs").is_dir()]
    order = list(DESCRIPTIONS)
    return sorted(folders, key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))


def main_table(results: Path, suffix: str = "") -> list[str]:
    """One row per variant: probe (u, v, strain; u, v), FR mean ± sd over seeds, CPU seconds per sample."""
    lines = ["| pipeline | probe UF1 / UAR (u, v, strain) | probe UF1 / UAR (u, v) | FR UF1 (mean ± sd) | "
             "FR UAR (mean ± sd) | FR seeds: UF1 | CPU s / sample |", "|---|---|---|---|---|---|---:|"]
    for folder in _variants(results):
        if not (folder / f"probe-uvs{suffix}").is_dir():
            continue
        record = folder / "preprocess.json"
        seconds = f"{json.loads(record.read_text())['cpu_seconds_per_sample']:.2f}" if record.is_file() else "–"
        fr_uf1, fr_uar, seeds = _fr(folder / f"fr{suffix}")
        name = DESCRIPTIONS.get(folder.name, f"`{folder.name}`")
        lines.append(f"| {name} | {_probe(folder / f'probe-uvs{suffix}')} | {_probe(folder / f'probe-uv{suffix}')} | "
                     f"{fr_uf1} | {fr_uar} | {seeds} | {seconds} |")
    sweep = results / "realbench" / "rows.json"
    if sweep.is_file():  # the plain reference pipeline, probed by the sweep on the same samples
        space = "casme2-5" if suffix == "-5" else "composite3"
        rows = {r["channels"]: r for r in json.loads(sweep.read_text())["rows"]
                if r["space"] == space and r["variant"] == PLAIN}
        if rows:
            lines.append("| plain reference pipeline (`benchmarks/plain_pipeline.py`: landmark box + 25 % above, "
                         "256 px, nose median, raw; probed by `realbench.py`) | "
                         + " | ".join(f"{rows[c]['uf1']:.4f} / {rows[c]['uar']:.4f}" for c in ("uvs", "uv"))
                         + " | – | – | – | – |")
    return lines + [""]


def comparison_table(results: Path) -> list[str]:
    """The paired FR comparisons (``fr-mer compare --json``): mean difference ± se, interval, wins."""
    lines = ["| A - B (FR, same seeds and folds) | seeds | UF1 difference (mean ± se) | 95 % bootstrap interval "
             "over subjects | wins A / B |", "|---|---:|---|---|---|"]
    for path in sorted(results.glob("compare-*.json")):
        record = json.loads(path.read_text())
        full = next(m for m in record["metrics"] if m["scope"] == "full" and m["metric"] == "uf1")
        low, high = full["interval"]
        lines.append(f"| {path.stem.removeprefix('compare-')} | {len(full['difference'])} | "
                     f"{full['mean_difference']:+.4f} ± {full['se_difference']:.4f} | [{low:+.4f}, {high:+.4f}] | "
                     f"{full['wins_a']} / {full['wins_b']} |")
    return lines + [""]


def sweep_table(path: Path, space: str) -> list[str]:
    """The stage-by-stage probe sweep of ``realbench.py`` in one label space."""
    record = json.loads(path.read_text())
    rows = [r for r in record["rows"] if r["space"] == space]
    if not rows:
        return []
    n = rows[0]["n"]
    lines = [f"{space}: {n} samples, {record['cpu']}, {record['date']}", "",
             "| crop-size | head motion after the flow | normalisation | probe UF1 (u, v) | probe UF1 (u, v, strain) |",
             "|---|---|---|---:|---:|"]
    table: dict[tuple[str, str, str], dict[str, float]] = {}
    for row in rows:
        flow, motion, normalisation = row["variant"].split("|")
        table.setdefault((flow, motion, normalisation), {})[row["channels"]] = row["uf1"]
    for (flow, motion, normalisation), uf1s in sorted(table.items()):
        lines.append(f"| {flow} | {motion} | {normalisation} | {uf1s.get('uv', float('nan')):.4f} | "
                     f"{uf1s.get('uvs', float('nan')):.4f} |")
    seconds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(record["seconds_per_sample_median"].items()))
    return lines + ["", f"Median seconds per clip (landmarks; crop and flow per variant): {seconds}.", ""]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "realdev"
    out = ["## Composite classes (3), the samples with a released image", ""] + main_table(results)
    out += ["## Paired FR comparisons", ""] + comparison_table(results)
    if any((p / "probe-uvs-5").is_dir() for p in _variants(results)):
        out += ["## CASME II's five classes", ""] + main_table(results, "-5")
    sweep = results / "realbench" / "rows.json"
    if sweep.is_file():
        out += ["## Stage by stage (linear probe)", ""]
        for space in ("composite3", "casme2-5"):
            out += sweep_table(sweep, space)
    print("\n".join(out).rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
