"""Training step of ``fr`` and ``dual_inception`` on the CPU: fr-mer's step against the one it replaced.

Both steps train the same network (the same module, so the same weights at
the start) on the same batch of the real MEGC2019 composite inputs, with
the models' recipe (Adam 1e-3, batch 128):

- ``before``: the step as fr-mer took it until this benchmark was written:
  each stream's input copied to channels-last, every 1x1 convolution through
  oneDNN (one input channel included), the four branches concatenated at full
  resolution and then pooled, and torch's per-tensor Adam loop;
- ``now``: ``model(batch)`` of fr-mer's models and ``make_optimizer`` (fused
  Adam), as ``fr-mer evaluate`` runs them.

The two are interleaved (one round: ``--steps`` steps of each, in turn, for
``--repeats`` rounds) in one process, so that a shared, variably loaded
machine affects both alike; the per-round ratio (before / now) is the figure
to read. Process CPU time is reported beside wall time: with one thread it is
the work done, whatever the load.

The minutes per seed are an estimate: the measured CPU seconds per sample at
batch 128 (one thread) times the samples one seed trains on (68 folds x 20 epochs x the
fold's training samples), without the last, smaller batch of each epoch
being any cheaper per sample, and without prediction and I/O.

Run: ``python benchmarks/inception_speed.py --threads 1`` (and ``--threads 2``).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fr_mer.data import load_dataset
from fr_mer.models import create_model, model_class
from fr_mer.protocols import subject_folds
from fr_mer.randomness import seeded_initialisation
from fr_mer.training import make_optimizer

DEFAULT_CACHE = Path("/tmp/speed/megc.h5")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "speed"
MODELS = ("fr", "dual_inception")


# -- the step before ------------------------------------------------------------
def _block_before(block, x: torch.Tensor) -> torch.Tensor:
    b1, r3, r5 = F.relu(block.reduce(x)).split(block.filters, dim=1)
    pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return torch.cat((b1, F.relu(block.conv3(r3)), F.relu(block.conv5(r5)), F.relu(block.pool_proj(pooled))), dim=1)


def _backbone_before(backbone, x: torch.Tensor) -> torch.Tensor:
    outs = []
    for i, stream in enumerate(backbone.streams):
        z = x[:, i:i + 1].contiguous(memory_format=torch.channels_last)
        for block in stream.blocks:
            z = F.max_pool2d(_block_before(block, z), kernel_size=2, stride=2)
        outs.append(z)
    return torch.cat(outs, dim=1).contiguous()


def model_before(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (same weights) whose backbone runs the former forward pass."""
    before = copy.deepcopy(model)
    before.backbone.forward = types.MethodType(_backbone_before, before.backbone)
    return before


def optimizer_before(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, foreach=False)


# -- the kernels no rewrite in float32 removes ------------------------------------
def kernels_only_step(model, batch_size: int):
    """A step of only the arithmetic-bound kernels of ``model``'s step: its lower bound in float32.

    Every convolution of the backbone that reads more than one channel, forward
    and backward (weights and, inside the network, inputs), on dense channels-last
    inputs of the network's shapes; the head's matrix products forward and backward;
    the fused Adam update. No pooling, ReLU, copy or concatenation: whatever a
    rewrite of the rest achieves, a step costs at least this (with these kernels).
    """
    g = torch.Generator().manual_seed(0)
    convs, tensors = [], []
    for stream in model.backbone.streams:
        for block in stream.blocks:
            cin, f = block.reduce.in_channels, block.filters
            size = 28 if cin == 1 else 14
            layers = [(block.conv3, f), (block.conv5, f)]
            if cin > 1:
                layers += [(block.reduce, cin), (block.pool_proj, cin)]
            for conv, channels in layers:
                x = torch.rand(batch_size, channels, size, size, generator=g).contiguous(
                    memory_format=torch.channels_last).requires_grad_(cin > 1 or conv is not block.reduce)
                convs.append(conv)
                tensors.append(x)
    features = torch.rand(batch_size, model.backbone.out_channels * 49, generator=g).requires_grad_()
    optimizer = make_optimizer(model, model.recipe)

    def head(x: torch.Tensor) -> torch.Tensor:
        if hasattr(model, "branch"):
            return model.branch.shared_input(x)
        return model.fc1(x)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for conv, x in zip(convs, tensors):
            out = conv(x)
            out.backward(torch.ones_like(out))
        out = head(features)
        out.backward(torch.ones_like(out))
        optimizer.step()
    return step


# -- measurement ------------------------------------------------------------------
def machine_info(threads: int) -> dict:
    cpu, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return {"cpu": cpu, "vector_extensions": vector, "nproc": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def make_step(model, optimizer, batch, target):
    def step() -> None:
        loss = model.loss(model(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def time_model(name: str, data, batch_size: int, repeats: int, steps: int, seed: int) -> dict:
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch, target = data.batch(index), data.labels[index]
    with seeded_initialisation(seed):
        now = create_model(name).train()
    before = model_before(now)
    recipe = now.recipe
    steppers = {"before": make_step(before, optimizer_before(before, recipe.lr), batch, target),
                "now": make_step(now, make_optimizer(now, recipe), batch, target),
                "kernels": kernels_only_step(copy.deepcopy(now), batch_size)}
    for step in steppers.values():  # warm-up: oneDNN primitives, allocator growth
        step()
        step()
    wall = {k: [] for k in steppers}
    cpu = {k: [] for k in steppers}
    for _ in range(repeats):
        for key, step in steppers.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            wall[key].append((time.perf_counter() - start) / steps)
            cpu[key].append((time.process_time() - start_cpu) / steps)
    ratios = [b / n for b, n in zip(cpu["before"], cpu["now"])]
    wall_ratios = [b / n for b, n in zip(wall["before"], wall["now"])]
    bound = [b / k for b, k in zip(cpu["before"], cpu["kernels"])]
    return {
        "model": name, "batch_size": batch_size, "cpu_ratio_bound_median": float(np.median(bound)),
        "ms_per_step": {k: 1e3 * float(np.median(v)) for k, v in wall.items()},
        "cpu_ms_per_step": {k: 1e3 * float(np.median(v)) for k, v in cpu.items()},
        "cpu_ratio_median": float(np.median(ratios)), "cpu_ratio_range": [float(min(ratios)), float(max(ratios))],
        "wall_ratio_median": float(np.median(wall_ratios)),
    }


def samples_per_seed(data, epochs: int) -> int:
    folds = subject_folds(data.databases, data.subjects)
    return epochs * sum(len(fold.train_index) for fold in folds)


def markdown(report: dict) -> str:
    info = report["machine"]
    lines = [
        f"### One training step at batch {report['rows'][0]['batch_size']}, {info['threads']} thread(s)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- CPU: {info['cpu']} ({info['vector_extensions']}; torch's kernels: {info['torch_cpu_capability']}), "
        f"{info['nproc']} cores, torch {info['torch']}",
        f"- load average (1, 5, 15 min) at start {report['load_start']}, at end {report['load_end']}",
        f"- {report['repeats']} interleaved rounds of {report['steps']} steps each",
        "",
        "| model | before ms/step (wall, CPU) | now ms/step (wall, CPU) | ratio (CPU; range) | ratio (wall) |"
        " kernels only ms/step (CPU) | bound on the ratio (CPU) | one seed on one core, estimate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        w, c = row["ms_per_step"], row["cpu_ms_per_step"]
        lines.append(
            f"| `{row['model']}` | {w['before']:.0f}, {c['before']:.0f} | {w['now']:.0f}, {c['now']:.0f} | "
            f"{row['cpu_ratio_median']:.2f} ({row['cpu_ratio_range'][0]:.2f}-{row['cpu_ratio_range'][1]:.2f}) | "
            f"{row['wall_ratio_median']:.2f} | {c['kernels']:.0f} | {row['cpu_ratio_bound_median']:.2f} | "
            f"{row['seed_minutes_estimate']:.1f} min |")
    lines += ["", f"One seed: {report['samples_per_seed']:,} training samples (68 folds x 20 epochs); the estimate "
              "is the CPU time per sample of `now` at batch 128 times that count (one thread; two processes "
              "sharing the folds with `--from-end` halve it on two idle cores). \"Kernels only\": the "
              "convolutions, matrix products and Adam update of the step alone (`kernels_only_step`); "
              "before / kernels only bounds what any float32 rewrite of the rest can give."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="fr-mer cache of the composite inputs (made by `fr-mer import-ststnet`).")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1).")
    parser.add_argument("--repeats", type=int, default=7, help="Interleaved rounds (default 7).")
    parser.add_argument("--steps", type=int, default=3, help="Steps of each variant per round (default 3).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Folder for the JSON and markdown results.")
    args = parser.parse_args(argv)
    if not args.cache.is_file():
        print(f"skipped: {args.cache} not found. Make it with `fr-mer import-ststnet --images "
              f"../shared/data/megc2019/ststnet_flow --out {args.cache}` (the real composite inputs).")
        return 0
    torch.set_num_threads(args.threads)
    report = {
        "command": " ".join(["python", "benchmarks/inception_speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.threads), "load_start": load_average(),
        "repeats": args.repeats, "steps": args.steps,
    }
    data = load_dataset(args.cache, model_class("fr").inputs, torch.device("cpu"))
    report["samples_per_seed"] = samples_per_seed(data, model_class("fr").recipe.epochs)
    rows = []
    for name in args.models:
        row = time_model(name, data, model_class(name).recipe.batch_size, args.repeats, args.steps, args.seed)
        per_sample = row["cpu_ms_per_step"]["now"] / 1e3 / row["batch_size"]
        row["seed_minutes_estimate"] = per_sample * report["samples_per_seed"] / 60
        rows.append(row)
        print(f"  {name}: {row['cpu_ms_per_step']} CPU ms/step, ratio {row['cpu_ratio_median']:.2f}",
              file=sys.stderr, flush=True)
    report["rows"] = rows
    report["load_end"] = load_average()
    text = markdown(report)
    report["markdown"] = text
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"inception-step-{args.threads}t-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{stem}.md").write_text(text + "\n")
    print(f"\nwritten: {args.out / stem}.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
