"""The real-data tables of the seed methods and of FR's head decision, from the archived runs.

Reads ``benchmarks/results/models/real-dev/<run>[-5]/{metrics.json,run.json}`` (written by
``benchmarks/seed_models_real.py``) and prints:

- ``models``: one row per model run (docs/benchmarks-models.md, "The seed methods on real
  micro-expressions"): UF1 / UAR mean ± sd over seeds (sample sd), the per-seed UF1, parameters,
  CPU seconds per seed, and the paper's own CASME II figure with its protocol;
- ``heads``: FR's candidate heads (docs/benchmarks.md, "FR's head, chosen on the real development
  subjects"): mean ± sd, per seed, and each head's paired difference from FR's current default and
  from Dual-Inception (mean ± se over seeds, seeds ahead); the head with the highest mean UF1 is the
  decision rule, stated before the runs.

    python benchmarks/seed_models_table.py [models|heads] [ROOT]
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from fr_mer.metrics import standard_error
from fr_mer.paired_statistics import sign_counts

ROOT = Path(__file__).resolve().parent / "results" / "models" / "real-dev"
#: The seed-model rows, in this order: run folder name, what the input is.
MODEL_ROWS = (("fr", "flow u, v"), ("dual_inception", "flow u, v"), ("ststnet", "flow u, v, strain"),
              ("micro_attention", "apex face"), ("meranet", "clip"), ("smastn", "dynamic images + onset face"),
              ("smastn_e40", "dynamic images + onset face"))
#: Each paper's own CASME II figure (../shared/specs) with its protocol; "-": the specs give none.
PAPER_FIGURES = {
    "fr": "UF1 0.8915 / UAR 0.8873 (MEGC2019 composite, its CASME II part, 3 classes)",
    "dual_inception": "UF1 0.8621 / UAR 0.8560 (composite, CASME II part, 3 classes)",
    "ststnet": "UF1 0.8382 / UAR 0.8686 (composite, CASME II part, 3 classes)",
    "micro_attention": "- (not in the specs)",
    "meranet": "- (not in the specs)",
    "smastn": "F1 0.7946 / accuracy 82.59 % (CASME II LOSO, 5 classes)",
}
PAPER_FIGURES["smastn_e40"] = PAPER_FIGURES["smastn"]
#: FR's candidate heads; the first is FR's default when the decision was made.
HEAD_ROWS = ("fr", "fr_naive", "fr_spatial", "fr_channel", "fr_noatt", "fr_propgate_noprop", "fr_spatial_noprop")


def load(root: Path, name: str) -> tuple[dict, dict] | None:
    folder = root / name
    if not (folder / "metrics.json").is_file():
        return None
    return json.loads((folder / "metrics.json").read_text()), json.loads((folder / "run.json").read_text())


def per_seed(metrics: dict, key: str = "uf1") -> dict[str, float]:
    return {seed: figures[key] for seed, figures in metrics["full"]["per_seed"].items()}


def mean_sd(values: list[float]) -> str:
    sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{sd}"


def paired(a: dict[str, float], b: dict[str, float]) -> str:
    """Mean ± se of the per-seed differences a - b over the seeds both have, and how many a leads."""
    seeds = sorted(set(a) & set(b), key=int)
    diffs = [a[s] - b[s] for s in seeds]
    if len(diffs) < 2:
        return "-"
    ahead = sign_counts(diffs)[0]
    return f"{statistics.fmean(diffs):+.4f} ± {standard_error(diffs):.4f} ({ahead} of {len(diffs)} ahead)"


def cpu_per_seed(record: dict, seeds: int) -> str:
    """CPU seconds per seed; unknown where the invocation resumed folds an earlier one trained."""
    if record.get("folds_resumed", 0):
        return "not recorded (resumed)"
    return f"{record['cpu_seconds_this_invocation'] / seeds:.0f}"


def model_rows(root: Path, suffix: str) -> list[str]:
    lines = ["| model | input | options | parameters | seeds | UF1 mean ± sd | UAR mean ± sd | per-seed UF1 "
             "| CPU s per seed | the paper's CASME II figure |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, source in MODEL_ROWS:
        loaded = load(root, name + suffix)
        if loaded is None:
            continue
        metrics, record = loaded
        uf1s, uars = per_seed(metrics), per_seed(metrics, "uar")
        options = ", ".join(f"{k}={v}" for k, v in record["options"].items()) or "defaults"
        recipe = metrics["recipe"]
        floor = f", at least {recipe['min_steps']} steps" if recipe["min_steps"] else ""
        epochs = f"{recipe['epochs']} epochs{floor}"
        lines.append(
            f"| `{name}` | {source} | {options}; {epochs} | {record['parameters']:,} | {len(uf1s)} | "
            f"{mean_sd(list(uf1s.values()))} | {mean_sd(list(uars.values()))} | "
            f"{', '.join(f'{v:.4f}' for v in uf1s.values())} | "
            f"{cpu_per_seed(record, len(uf1s))} | {PAPER_FIGURES[name]} |")
    return lines


def head_rows(root: Path) -> list[str]:
    default = load(root, HEAD_ROWS[0])
    backbone = load(root, "dual_inception")
    lines = ["| head | options | seeds | UF1 mean ± sd | UAR mean ± sd | per-seed UF1 | ΔUF1 vs `fr` default "
             "(mean ± se) | ΔUF1 vs `dual_inception` (mean ± se) |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(name, load(root, name)) for name in HEAD_ROWS]
    rows += [("dual_inception", backbone)]
    for name, loaded in rows:
        if loaded is None:
            continue
        metrics, record = loaded
        uf1s = per_seed(metrics)
        options = ", ".join(f"{k}={v}" for k, v in record["options"].items()) or "defaults"
        lines.append(
            f"| `{name}` | {options} | {len(uf1s)} | {mean_sd(list(uf1s.values()))} | "
            f"{mean_sd(list(per_seed(metrics, 'uar').values()))} | {', '.join(f'{v:.4f}' for v in uf1s.values())} | "
            f"{paired(uf1s, per_seed(default[0])) if default and name != HEAD_ROWS[0] else '-'} | "
            f"{paired(uf1s, per_seed(backbone[0])) if backbone and name != 'dual_inception' else '-'} |")
    candidates = {name: statistics.fmean(per_seed(loaded[0]).values()) for name, loaded in rows[:-1] if loaded}
    if candidates:
        best = max(candidates, key=candidates.get)
        lines += ["", f"Highest mean UF1 among the heads: `{best}` ({candidates[best]:.4f})."]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    which = argv[0] if argv else "models"
    root = Path(argv[1]) if len(argv) > 1 else ROOT
    if which == "models":
        lines = model_rows(root, "")
        five = model_rows(root, "-5")
        if len(five) > 2:
            lines += ["", "Five classes (CASME II, `--protocol loso --database casme2 --classes 5`):", "", *five]
    elif which == "heads":
        lines = head_rows(root)
    else:
        raise SystemExit(f"usage: seed_models_table.py [models|heads] [ROOT]; got {which!r}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
