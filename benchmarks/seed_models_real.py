"""The seed methods and FR's heads on real micro-expressions: the real development subjects, LOSO.

Not product code. One cache made as a user makes it (``fr-mer preprocess --dataset casme2 --root
../shared/data/casme2-real --with-clip --with-dynamic-images``) holds every model's input: the flow
(FR, Dual-Inception, STSTNet), the apex face (Micro-attention), the clip (MERANet) and the dynamic
images (SMA-STN). Every run is ``fr-mer evaluate`` with ``--threads 1`` on the same samples and folds:
the official composite list's rows of the development subjects (``dev3.csv`` of
``benchmarks/realdev.py``: 61 samples, 14 subjects, 3 classes) with ``--protocol composite
--composite-list``, or with ``--five-classes`` CASME II's five classes (``--protocol loso --database
casme2 --classes 5``). Seeds are paired across runs (0, 1, ...).

    python benchmarks/seed_models_real.py --cache dev-clip.h5 --out benchmarks/results/models/real-dev \\
        --work /tmp/seed-runs [--runs fr,dual_inception] [--seeds 3] [--five-classes]

Every run logs the held-out subject after each epoch (``--audit-selection``: the last epoch is the
result; the log is for the audit only). Each run's results folder is made in --work (an interrupted
run resumes there); its config.json, metrics.json, predictions.csv, folds.csv (each fold's last
training loss), selection_audit.json and the per-epoch archive ``epoch_predictions.npz``
(docs/protocols.md) are copied to OUT/<run>[-5]/ with run.json: the command, the CPU seconds it
used (process and children), the model's parameter count and the CPU model.
``benchmarks/seed_models_table.py`` prints the tables of docs/benchmarks-models.md and
docs/benchmarks.md from OUT.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from fr_mer.commands.common import parse_model_options
from fr_mer.environment import cpu_model
from fr_mer.models import count_parameters, create_model
from realdev import fr_mer  # benchmarks/realdev.py: runs fr-mer, returns its CPU seconds

HERE = Path(__file__).resolve().parent
DEV_LIST = HERE / "results" / "realdev" / "dev3.csv"

#: Run name -> (model, ``-o`` options, other ``fr-mer evaluate`` options). The CPU settings of the
#: image and clip models (input sizes, epochs) are documented in docs/benchmarks-models.md; the
#: flow models run their defaults. The ``fr_*`` heads are the candidates of FR's head decision
#: (docs/benchmarks.md), named as in ``benchmarks/fr_ablation.py``.
RUNS: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "fr": ("fr", {}, []),
    "fr_naive": ("fr", {"attention": "scalar"}, []),
    "fr_spatial": ("fr", {"attention": "spatial"}, []),
    "fr_channel": ("fr", {"attention": "channel"}, []),
    "fr_noatt": ("fr", {"attention": "none"}, []),
    "fr_propgate_noprop": ("fr", {"proposal_loss": "none"}, []),
    "fr_spatial_noprop": ("fr", {"attention": "spatial", "proposal_loss": "none"}, []),
    "dual_inception": ("dual_inception", {}, []),
    "ststnet": ("ststnet", {}, []),
    "micro_attention": ("micro_attention", {"input_size": "64"}, ["--epochs", "30"]),
    "smastn": ("smastn", {"width": "16", "input_size": "64"}, ["--epochs", "15"]),
    "smastn_e40": ("smastn", {"width": "16", "input_size": "64"}, ["--epochs", "40"]),
    "meranet": ("meranet", {"input_size": "32", "clip_length": "8"}, ["--epochs", "40"]),
}
#: The candidates of FR's head decision, FR's current default first.
FR_HEADS = ("fr", "fr_naive", "fr_spatial", "fr_channel", "fr_noatt", "fr_propgate_noprop", "fr_spatial_noprop")
KEPT = ("config.json", "metrics.json", "predictions.csv", "folds.csv", "selection_audit.json", "epoch_predictions.npz")


def parameter_count(model: str, options: dict[str, str], n_classes: int) -> int:
    """Trainable parameters of ``model`` with ``options`` (the CLI's ``-o`` values, parsed as it does)."""
    values = parse_model_options(tuple(f"{k}={v}" for k, v in options.items()))
    return count_parameters(create_model(model, n_classes=n_classes, **values))


def run(name: str, cache: Path, out: Path, work: Path, seeds: int, five: bool) -> None:
    model, options, extra = RUNS[name]
    suffix = "-5" if five else ""
    keep = out / f"{name}{suffix}"
    if (keep / "run.json").is_file() and json.loads((keep / "run.json").read_text())["seeds"] == seeds:
        print(f"{keep}: done", flush=True)
        return
    protocol = (["--protocol", "loso", "--database", "casme2", "--classes", "5"] if five
                else ["--protocol", "composite", "--composite-list", str(DEV_LIST)])
    folder = work / f"{name}{suffix}"
    args = ["evaluate", "--cache", str(cache), *protocol, "--model", model,
            *[a for k, v in options.items() for a in ("-o", f"{k}={v}")], *extra,
            "--seeds", str(seeds), "--threads", "1", "--jobs", "1", "--audit-selection", "--out", str(folder)]
    work.mkdir(parents=True, exist_ok=True)
    # Folds a previous invocation trained: their CPU time is not in this one's.
    resumed = sum(1 for path in folder.glob("folds/seed*/*.json") if not path.name.endswith(".audit.json"))
    seconds = fr_mer(*args, log=work / f"{name}{suffix}.log")
    keep.mkdir(parents=True, exist_ok=True)
    for file_name in KEPT:
        if (folder / file_name).is_file():
            shutil.copy2(folder / file_name, keep / file_name)
    record = {
        "run": name, "model": model, "options": options, "seeds": seeds,
        "command": "fr-mer " + " ".join(a if a not in (str(cache), str(folder), str(DEV_LIST)) else
                                        {str(cache): "CACHE", str(folder): "OUT", str(DEV_LIST): "dev3.csv"}[a]
                                        for a in args),
        "cpu_seconds_this_invocation": round(seconds, 1),
        "folds_resumed": resumed,
        "parameters": parameter_count(model, options, 5 if five else 3),
        "cpu": cpu_model(),
    }
    (keep / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{keep}: {seconds:.0f} CPU s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, type=Path, help="the development cache (clip and dynamic images)")
    parser.add_argument("--out", required=True, type=Path, help="archive folder (benchmarks/results/models/real-dev)")
    parser.add_argument("--work", required=True, type=Path, help="scratch folder for the results folders")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated names of RUNS, run in this order")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per run (0, 1, ...)")
    parser.add_argument("--five-classes", action="store_true", help="CASME II's five classes instead of 3")
    args = parser.parse_args()
    names = args.runs.split(",")
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {sorted(RUNS)}")
    for name in names:
        run(name, args.cache.resolve(), args.out, args.work, args.seeds, args.five_classes)


if __name__ == "__main__":
    main()
