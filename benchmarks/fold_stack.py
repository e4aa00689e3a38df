"""Composite LOSO of any model: all folds of a seed as one stacked model against fold-by-fold, same device.

Measures, on one device (a GPU when there is one):

1. fold-by-fold: fr-mer's own ``run_fold`` (one network of ``--model`` per
   fold; STSTNet's fused step) on ``--fold-by-fold`` folds spread over the
   three databases, the model's recipe (``--epochs`` epochs; STSTNet's public
   recipe: Adam 5e-5, batch 256, 800 epochs); its per-fold mean times the
   number of folds is the fold-by-fold time of a seed;
2. stacked: every fold of a seed as one stacked model (``--fold-batch 0``),
   (STSTNet's hand-written stack, every other model's through
   :mod:`fr_mer.func_stack`), eager and, for STSTNet with ``--compile``,
   through ``torch.compile``; the eager variant
   is a full ``fr-mer evaluate`` for each of ``--seeds`` seeds, so its UF1/UAR
   can be set beside the fold-by-fold CPU runs in docs/benchmarks.md.

Writes ``OUT/fold_stack.json`` and each stacked seed's results folder.

    python benchmarks/fold_stack.py --cache megc2019.h5 --out runs/fold-stack --device cuda
    python benchmarks/fold_stack.py --model fr --cache megc2019.h5 --out runs/fold-stack-fr --device cuda
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fr_mer.data import load_dataset, resolve_device  # noqa: E402
from fr_mer.evaluation import EvalConfig, run_evaluation, run_fold  # noqa: E402
from fr_mer.run_plan import FoldJob, make_plan  # noqa: E402
from fr_mer.fold_stack import train_stacked  # noqa: E402
from fr_mer.models import create_model, model_class  # noqa: E402
from fr_mer.protocols import subject_folds  # noqa: E402
from fr_mer.randomness import seeded_initialisation  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def spread(n: int, k: int) -> list[int]:
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


#: (name, the fused convolution-to-pooling pass, torch.compile)
VARIANTS = (
    ("plain autograd", False, False),
    ("fused pass (default)", True, False),
    ("plain autograd, torch.compile", False, True),
)


def step_variants(data, folds, recipe, device: torch.device, steps: int = 40, profile: bool = False) -> list[dict]:
    """Milliseconds per stacked training step (all folds, a full batch) for layout and library choices."""
    from fr_mer.fold_stack import StackedAdam, stacked_step

    index = torch.stack([torch.as_tensor(f.train_index[:recipe.batch_size]) for f in folds]).to(device)
    counts = torch.full((len(folds),), index.shape[1], device=device)
    rows = []
    for name, fused, compiled in VARIANTS:
        with seeded_initialisation(0):
            models = [create_model("ststnet") for _ in folds]
        stacked = model_class("ststnet").stacked(models).to(device).train()
        stacked.fused = fused
        optimizer = StackedAdam(list(stacked.parameters()), len(folds), lr=recipe.lr)
        forward = stacked
        if compiled:
            torch._dynamo.reset()
            forward = torch.compile(stacked)
            optimizer.step = torch.compile(optimizer.step)
        start = time.perf_counter()
        for _ in range(5):
            stacked_step(forward, optimizer, data, index, counts)
        synchronize(device)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            stacked_step(forward, optimizer, data, index, counts)
        synchronize(device)
        ms = (time.perf_counter() - start) / steps * 1000
        rows.append({"variant": name, "ms_per_step": ms, "first_5_steps_s": warm})
        print(f"step {rows[-1]}", flush=True)
        if profile and not compiled:  # the top kernels by GPU time
            from torch.profiler import ProfilerActivity, profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    stacked_step(forward, optimizer, data, index, counts)
                synchronize(device)
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60),
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="Composite cache (fr-mer import-ststnet).")
    parser.add_argument("--out", type=Path, required=True, help="Folder for the JSON and the stacked runs.")
    parser.add_argument("--model", default="ststnet", help="Any registered model (default: ststnet).")
    parser.add_argument("--composite-list", type=Path, default=None,
                        help="The cache's composite list (default: the official MEGC2019 list).")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    parser.add_argument("--epochs", type=int, default=None,
                        help="Epochs per fold (default: the model's recipe; STSTNet's public recipe: 800).")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds of the eager stacked evaluation.")
    parser.add_argument("--fold-by-fold", type=int, default=8, help="Folds timed fold by fold (68: all).")
    parser.add_argument("--compile", action="store_true", help="Also time the stack through torch.compile.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch.")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="Let cuDNN time its algorithms (torch.backends.cudnn.benchmark) for both ways.")
    parser.add_argument("--profile", action="store_true", help="With --step-variants: print the top kernels.")
    parser.add_argument("--step-variants", action="store_true",
                        help="Also time one stacked step: fused pass, plain autograd, torch.compile.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.model
    if name != "ststnet" and (args.compile or args.step_variants):
        parser.error("--compile and --step-variants time STSTNet's hand-written stack: use --model ststnet")
    listing = str(args.composite_list.resolve()) if args.composite_list else None
    recipe = model_class(name).recipe.replace(epochs=args.epochs)
    with seeded_initialisation(0):
        data = load_dataset(args.cache, create_model(name).inputs, device, composite_list=args.composite_list)
    folds = subject_folds(data.databases, data.subjects)
    record = {"command": " ".join(sys.argv), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(device),
              "model": name, "epochs": recipe.epochs, "folds": len(folds), "samples": len(data)}
    print(json.dumps(record["machine"]), flush=True)

    # Warm-up: library loading, cuDNN's algorithm choice, the allocator.
    warm = recipe.replace(epochs=2)
    config = EvalConfig(model=name, recipe=warm, seeds=(0,), composite_list=listing)
    run_fold(make_plan(config, args.cache), data, FoldJob(0, 0, folds[0]))
    with seeded_initialisation(0):
        models = [create_model(name) for _ in folds]
    train_stacked(models, data, [f.train_index for f in folds], warm, seed=0)
    synchronize(device)

    if args.step_variants:
        record["step_variants"] = step_variants(data, folds, recipe, device, profile=args.profile)

    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    record["cudnn_benchmark"] = args.cudnn_benchmark
    plan = make_plan(EvalConfig(model=name, recipe=recipe, seeds=(0,), composite_list=listing), args.cache)
    timed = []
    for index in spread(len(folds), args.fold_by_fold):
        synchronize(device)
        start = time.perf_counter()
        result = run_fold(plan, data, FoldJob(0, index, folds[index]))
        synchronize(device)
        timed.append({"fold": folds[index].subject, "seconds": time.perf_counter() - start,
                      "correct": int(np.sum(np.asarray(result.true) == np.asarray(result.pred))),
                      "n": len(result.true)})
        print(f"fold-by-fold {timed[-1]}", flush=True)
    per_fold = float(np.mean([t["seconds"] for t in timed]))
    record["fold_by_fold"] = {"timed": timed, "mean_seconds_per_fold": per_fold,
                              "seconds_per_seed": per_fold * len(folds)}

    stacked_runs = []
    for seed in range(args.seeds):
        run_dir = args.out / f"stacked-seed{seed}"
        config = EvalConfig(model=name, recipe=recipe, seeds=(seed,), fold_batch=0, composite_list=listing)
        synchronize(device)
        start = time.perf_counter()
        metrics = run_evaluation(args.cache, run_dir, config, device=device, overwrite=True)
        synchronize(device)
        seconds = time.perf_counter() - start
        stacked_runs.append({"seed": seed, "seconds": seconds, "uf1": metrics["full"]["uf1"],
                             "uar": metrics["full"]["uar"]})
        print(f"stacked {stacked_runs[-1]}", flush=True)
    record["stacked"] = stacked_runs
    if stacked_runs:
        stacked_seconds = float(np.median([r["seconds"] for r in stacked_runs]))
        record["speed_up"] = record["fold_by_fold"]["seconds_per_seed"] / stacked_seconds

    if args.compile:
        with seeded_initialisation(0):
            models = [create_model("ststnet") for _ in folds]
        synchronize(device)
        start = time.perf_counter()
        train_stacked(models, data, [f.train_index for f in folds], recipe, seed=0, compile=True)
        synchronize(device)
        first = time.perf_counter() - start
        with seeded_initialisation(1):
            models = [create_model("ststnet") for _ in folds]
        start = time.perf_counter()
        train_stacked(models, data, [f.train_index for f in folds], recipe, seed=1, compile=True)
        synchronize(device)
        record["compiled"] = {"first_seconds": first, "second_seconds": time.perf_counter() - start}
        print(f"compiled {record['compiled']}", flush=True)

    (args.out / "fold_stack.json").write_text(json.dumps(record, indent=1))
    print(f"fold-by-fold: {per_fold:.2f} s per fold, {per_fold * len(folds):.1f} s per seed of {len(folds)} folds")
    for r in stacked_runs:
        print(f"stacked seed {r['seed']}: {r['seconds']:.1f} s, UF1 {r['uf1']:.4f}, UAR {r['uar']:.4f}")
    if "speed_up" in record:
        print(f"speed-up (fold-by-fold seed / stacked seed, median): {record['speed_up']:.1f}x")
    if "compiled" in record:
        print(f"compiled stack: {record['compiled']}")


if __name__ == "__main__":
    main()
