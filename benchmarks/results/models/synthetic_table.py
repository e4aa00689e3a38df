"""Print the synthetic-amplitude table of docs/benchmarks-models.md from the stored runs.

Reads benchmarks/results/models/synthetic-amp*/MODEL/{config,metrics}.json
(written by synthetic_runs.sh) and prints one Markdown row per run.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rows() -> list[str]:
    lines = ["| amplitude | model | options, epochs | seeds | UF1 | UAR "
             "| training time (9 folds, 1 thread, loaded machine) |",
             "|---|---|---|---|---|---|---|"]
    for folder in sorted(HERE.glob("synthetic-amp*"), key=lambda p: float(p.name.removeprefix("synthetic-amp"))):
        amplitude = folder.name.removeprefix("synthetic-amp")
        for run in sorted(p for p in folder.iterdir() if (p / "metrics.json").is_file()):
            metrics = json.loads((run / "metrics.json").read_text())
            config = json.loads((run / "config.json").read_text())["config"]
            options = ", ".join(f"{k}={v}" for k, v in config["options"].items()) or "defaults"
            full = metrics["full"]
            lines.append(
                f"| {amplitude} | `{metrics['model']}` | {options}; {config['recipe']['epochs']} epochs | "
                f"{len(metrics['seeds'])} | {full['uf1']:.4f} | {full['uar']:.4f} | "
                f"{metrics['train_seconds_total']:.0f} s |"
            )
    return lines


if __name__ == "__main__":
    print("\n".join(rows()))
