"""Speed of the torch TV-L1 (``pipeline.tvl1_torch``) against OpenCV's, in flow pairs per second.

Pairs: scikit-image's astronaut face (a real photo) at ``--size`` px, each moved
by its own sub-pixel head translation and a smooth local "expression" warp (up to
about 1 px at 128 px, scaled with the size) at a random place on the lower face:
the kind of onset -> apex pair ``fr-mer preprocess`` gives TV-L1. All at fr-mer's
default ``TVL1Params``.

    python benchmarks/tvl1_torch.py                        # 8 pairs at 256 px, CPU (+ CUDA if present)
    python benchmarks/tvl1_torch.py --pairs 442 --batch 32 64 128 --skip-cpu-torch

Rows: OpenCV pair by pair and torch on the CPU at each ``--threads`` count (one
and all logical CPUs by default; torch at each ``--batch``); torch on CUDA at each
``--batch`` when a CUDA device is present (timed after one warm-up batch, with
the device synchronised). Each torch row also gives the mean and the worst
per-pair mean end-point error against OpenCV's flow of the same pair. Prints a
Markdown table and saves JSON (date, CPU model, GPU, versions) under
benchmarks/results/. Target (issue 15): >= 50 pairs/s at 256 px on a GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from fr_mer.pipeline.tvl1_params import TVL1Params
from fr_mer.pipeline.flow import tvl1_flow as opencv_flow
from fr_mer.pipeline.tvl1_torch import tvl1_flow
from fr_mer.environment import cpu_model

RESULTS = Path(__file__).parent / "results"


def face_pairs(n_pairs: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) float32 onset and apex images on the 0..255 scale."""
    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)[20:240, 140:360]
    face = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    apexes = []
    for _ in range(n_pairs):
        cx, cy = rng.uniform(0.3, 0.7) * size, rng.uniform(0.55, 0.8) * size
        bump = np.exp(-(((xx - cx) / (0.15 * size)) ** 2 + ((yy - cy) / (0.08 * size)) ** 2))
        amplitude = rng.uniform(0.5, 1.0) * size / 128
        shift = rng.uniform(-0.5, 0.5, 2)
        map_x = (xx + shift[0] - amplitude * bump).astype(np.float32)
        map_y = (yy + shift[1] - 0.5 * amplitude * bump).astype(np.float32)
        apexes.append(cv2.remap(face, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    return np.stack([face] * n_pairs), np.stack(apexes)


def time_opencv(onsets, apexes, threads: int) -> tuple[float, np.ndarray]:
    cv2.setNumThreads(threads)
    start = time.perf_counter()
    flows = np.stack([opencv_flow(a, b) for a, b in zip(onsets, apexes)])
    return time.perf_counter() - start, flows


def time_torch(onsets, apexes, batch: int, device: str) -> tuple[float, np.ndarray]:
    first, second = torch.from_numpy(onsets), torch.from_numpy(apexes)
    if device == "cuda":  # warm-up: CUDA context, kernels, caching allocator
        tvl1_flow(first[:batch].cuda(), second[:batch].cuda())
        torch.cuda.synchronize()
    start = time.perf_counter()
    flows = []
    for i in range(0, len(first), batch):
        flow = tvl1_flow(first[i:i + batch].to(device), second[i:i + batch].to(device))
        flows.append(flow.cpu())
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return elapsed, torch.cat(flows).permute(0, 2, 3, 1).numpy()


def epe_against(flows: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean over pairs, worst pair) of the per-pair mean end-point error."""
    per_pair = np.hypot(*(flows - reference).transpose(3, 0, 1, 2)).mean(axis=(1, 2))
    return float(per_pair.mean()), float(per_pair.max())


def markdown(rows: list[dict], record: dict) -> str:
    base = rows[0]["pairs_per_s"]
    lines = ["| solver | device | threads | batch | pairs/s | vs first OpenCV row | mean EPE vs OpenCV (px) "
             "| worst pair (px) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        epe = f"{r['epe_mean']:.4f}" if r["epe_mean"] is not None else "-"
        worst = f"{r['epe_worst']:.4f}" if r["epe_worst"] is not None else "-"
        lines.append(f"| {r['solver']} | {r['device']} | {r['threads']} | {r['batch']} | {r['pairs_per_s']:.2f} | "
                     f"{r['pairs_per_s'] / base:.2f}x | {epe} | {worst} |")
    lines += ["", f"{record['pairs']} pairs at {record['size']} px, default TVL1Params; {record['date']}; "
                  f"CPU {record['machine']['cpu_model']} ({record['machine']['cpus']} logical CPUs); "
                  f"GPU {record['machine']['gpu'] or 'none'}; torch {record['versions']['torch']}, "
                  f"OpenCV {record['versions']['opencv']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="flow pairs per row")
    parser.add_argument("--size", type=int, default=256, help="side of the images (fr-mer's flow size)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="torch batch sizes to time")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU thread counts to time (default: 1 and all logical CPUs)")
    parser.add_argument("--skip-cpu-torch", action="store_true", help="time torch on CUDA only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=RESULTS, help="folder of the JSON result")
    args = parser.parse_args(argv)

    onsets, apexes = face_pairs(args.pairs, args.size, args.seed)
    cpus = os.cpu_count() or 1
    thread_counts = args.threads or sorted({1, cpus})
    rows = []
    reference = None
    for threads in thread_counts:
        elapsed, flows = time_opencv(onsets, apexes, threads)
        reference = flows if reference is None else reference
        rows.append(dict(solver="OpenCV", device="cpu", threads=threads, batch=1, seconds=elapsed,
                         pairs_per_s=args.pairs / elapsed, epe_mean=None, epe_worst=None))
    runs = [] if args.skip_cpu_torch else [("cpu", threads, batch) for threads in thread_counts for batch in args.batch]
    if torch.cuda.is_available():
        runs += [("cuda", torch.get_num_threads(), batch) for batch in args.batch]
    for device, threads, batch in runs:
        torch.set_num_threads(threads)
        elapsed, flows = time_torch(onsets, apexes, batch, device)
        epe_mean, epe_worst = epe_against(flows, reference)
        rows.append(dict(solver="torch", device=device, threads=threads, batch=batch, seconds=elapsed,
                         pairs_per_s=args.pairs / elapsed, epe_mean=epe_mean, epe_worst=epe_worst))
        print(f"  {device} threads={threads} batch={batch}: {args.pairs / elapsed:.2f} pairs/s, "
              f"EPE {epe_mean:.4f} px", flush=True)

    record = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python benchmarks/tvl1_torch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "pairs": args.pairs,
        "size": args.size,
        "params": dataclasses.asdict(TVL1Params()),
        "machine": {"cpu_model": cpu_model(), "cpus": cpus, "platform": platform.platform(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "load_average_at_end": os.getloadavg()},
        "versions": {"torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__},
        "rows": rows,
    }
    print(markdown(rows, record))
    args.save.mkdir(parents=True, exist_ok=True)
    path = args.save / f"tvl1_torch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
