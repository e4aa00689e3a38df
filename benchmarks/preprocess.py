"""Speed of ``fr-mer preprocess``: samples per second and time per stage at several ``--jobs``.

Generated face sequences stand in for the licensed databases: scikit-image's
astronaut (a real face photo) scaled so the face is CASME II-sized (about 280 px
wide in a 640x480 frame), each clip with its own small pose, a local smooth warp
around the mouth and brows (the "expression", up to ~1.5 px) and a sub-pixel head
translation, written as JPEG frames. Every run preprocesses the same clips into a
fresh cache with :class:`pipeline.preprocess.PreprocessRun` (what the CLI runs).

    python benchmarks/preprocess.py                    # 80 clips, --jobs 1 and 2
    python benchmarks/preprocess.py --clips 16 --jobs 1 2 --flow-size 96

Prints a Markdown table and saves JSON under benchmarks/results/. Samples/s are
end to end (wall clock of the whole run: worker start-up and dlib's model load
included) and steady (from each worker's first finished sample to the last: what
a run of the 442 composite samples sees). Stage shares are of the summed
per-sample time of all workers; ``setup`` (loading dlib's models, once per
worker) is reported apart from them.
Targets (issue 2): two jobs >= 1.8x one job; the flow stage dominates (all
other per-sample stages together < 30%).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.flow import FLOW_DEVICES, flow_implementation
from fr_mer.pipeline.preprocess import (
    DEFAULT_FLOW_BATCH,
    STAGES,
    ClipOptions,
    DynamicImageOptions,
    PreprocessParams,
    PreprocessRun,
)

RESULTS = Path(__file__).parent / "results"

#: CASME II's frame size (width, height).
FRAME_SIZE = (640, 480)


def face_clip(index: int, n_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames (H, W) uint8 of one generated clip: onset at rest, motion growing to the last frame."""
    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    # The photo's face box is about (179, 83)-(266, 170); scale 3.2 makes it ~280 px wide.
    scale = 3.2 * rng.uniform(0.95, 1.05)
    angle = rng.uniform(-4, 4)
    centre = (222.0 + rng.uniform(-5, 5), 130.0 + rng.uniform(-5, 5))
    pose = cv2.getRotationMatrix2D(centre, angle, scale)
    pose[:, 2] += np.array(FRAME_SIZE, np.float64) / 2 - np.array(centre)
    base = cv2.warpAffine(gray, pose, FRAME_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    h, w = base.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2, h / 2
    # "expression": a mouth corner pull and a brow raise, smooth Gaussian bumps
    mouth = np.exp(-(((xs - cx) / 60) ** 2 + ((ys - (cy + 60)) / 30) ** 2))
    brows = np.exp(-(((xs - cx) / 90) ** 2 + ((ys - (cy - 105)) / 20) ** 2))
    amp_mouth, amp_brow = rng.uniform(0.5, 1.5), rng.uniform(0.3, 1.0)
    head = rng.uniform(-0.5, 0.5, size=2)
    frames = []
    for t in range(n_frames):
        a = t / max(1, n_frames - 1)
        dx = a * (amp_mouth * mouth * np.sign(xs - cx) + head[0])
        dy = a * (-amp_brow * brows + head[1])
        frame = cv2.remap(base, (xs - dx).astype(np.float32), (ys - dy).astype(np.float32),
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame += rng.normal(0, 1.0, frame.shape).astype(np.float32)  # sensor noise
        frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    return frames


def write_clips(folder: Path, n_clips: int, n_frames: int, seed: int) -> list[Clip]:
    """Clips in CASME II's raw layout (``sub01/EP01_01/img{n}.jpg``), apex = last frame but one."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n_clips):
        subject, name = f"sub{1 + i // 5:02d}", f"EP{i:02d}_01"
        clip_dir = folder / subject / name
        clip_dir.mkdir(parents=True, exist_ok=True)
        first = 100
        frames = {}
        for t, image in enumerate(face_clip(i, n_frames, rng)):
            path = clip_dir / f"img{first + t}.jpg"
            cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            frames[first + t] = path
        clips.append(Clip("casme2", subject, name, "happiness", "positive",
                          first, first + n_frames - 2, first + n_frames - 1, frames=frames))
    return clips


def measure(clips: list[Clip], params: PreprocessParams, jobs: int, out: Path, flow_device: str | None = None,
            flow_batch: int = DEFAULT_FLOW_BATCH) -> dict:
    if out.exists():
        out.unlink()
    params.as_dict()  # hashes the landmark model once, outside the timings
    start = time.perf_counter()
    run = PreprocessRun(clips, out, params, jobs=jobs, flow_device=flow_device, flow_batch=flow_batch)
    finished = []
    with run:
        for _ in run:
            finished.append(time.perf_counter())
    wall = time.perf_counter() - start
    # Steady state: once every worker has made its first sample (start-up and model load paid).
    warm = min(jobs, len(finished) - 1)
    steady = (len(finished) - warm) / (finished[-1] - finished[warm - 1]) if warm >= 1 else 0.0
    summary = run.summary
    if summary.failed:
        raise SystemExit(f"benchmark samples failed: {summary.failed}")
    per_sample = {k: v for k, v in summary.stage_seconds.items() if k != "setup"}
    busy = sum(per_sample.values())
    return {
        "jobs": jobs,
        "flow_device": flow_device or "opencv",
        "samples": summary.done,
        "wall_s": wall,
        "samples_per_s": summary.done / wall,
        "steady_samples_per_s": steady,
        "setup_s_total": summary.stage_seconds["setup"],
        "cpu_ms_per_sample": 1000 * summary.cpu_seconds / summary.done,
        "wall_ms_per_sample_in_worker": 1000 * busy / summary.done,
        "stage_ms_per_sample": {k: 1000 * v / summary.done for k, v in per_sample.items()},
        "stage_share": {k: v / busy for k, v in per_sample.items()},
        "flags": dict(summary.flags),
    }


def markdown(results: list[dict], params: PreprocessParams) -> str:
    shown = [s for s in STAGES if s != "setup" and any(r["stage_ms_per_sample"][s] > 0.05 for r in results)]
    base, steady_base = results[0]["samples_per_s"], results[0]["steady_samples_per_s"]
    head = ["jobs", "samples/s", "speed-up", "steady samples/s", "steady speed-up", "wall s"]
    head += [f"{s} ms" for s in shown] + ["flow share", "setup s", "CPU ms/sample"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [str(r["jobs"]), f"{r['samples_per_s']:.2f}", f"{r['samples_per_s'] / base:.2f}x",
                 f"{r['steady_samples_per_s']:.2f}", f"{r['steady_samples_per_s'] / steady_base:.2f}x",
                 f"{r['wall_s']:.1f}"]
        cells += [f"{r['stage_ms_per_sample'][s]:.1f}" for s in shown]
        cells += [f"{100 * r['stage_share']['flow']:.0f}%", f"{r['setup_s_total']:.1f}",
                  f"{r['cpu_ms_per_sample']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{results[0]['samples']} clips, 640x480 JPEG frames, flow size {params.flow_size}, "
        f"head motion {params.head_motion}. samples/s: whole run, wall clock (start-up included); "
        "steady: after each worker's first sample. Stage times: per sample, one core; "
        "flow share: of all per-sample stages; setup: dlib model load, summed over workers; "
        "CPU ms/sample: CPU time of the worker per sample (the stage times are wall time, which "
        "grows when other processes share the cores)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=80, help="generated clips (samples) per run")
    parser.add_argument("--frames", type=int, default=6, help="frames per clip, onset..offset")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to time")
    parser.add_argument("--flow-size", type=int, default=PreprocessParams().flow_size)
    parser.add_argument("--flow-device", choices=FLOW_DEVICES, default="opencv",
                        help="TV-L1 of fr-mer preprocess --flow-device (cpu, cuda: the torch port, batched)")
    parser.add_argument("--flow-batch", type=int, default=DEFAULT_FLOW_BATCH, help="pairs per torch TV-L1 batch")
    parser.add_argument("--with-clip", action="store_true", help="also make clip_frames")
    parser.add_argument("--with-dynamic-images", action="store_true", help="also make dynamic_images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the frames and caches (default: a temporary one, removed)")
    parser.add_argument("--save", type=Path, default=RESULTS, help="folder of the JSON result")
    args = parser.parse_args(argv)

    params = PreprocessParams(
        flow_size=args.flow_size,
        flow_implementation=flow_implementation(args.flow_device),
        clip=ClipOptions() if args.with_clip else None,
        dynamic_images=DynamicImageOptions() if args.with_dynamic_images else None,
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="frmer-bench-"))
    try:
        clips = write_clips(work / "frames", args.clips, args.frames, args.seed)
        device = None if args.flow_device == "opencv" else args.flow_device
        results = [measure(clips, params, jobs, work / f"cache-j{jobs}.h5", device, args.flow_batch)
                   for jobs in args.jobs]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    table = markdown(results, params)
    print(table)
    record = {
        "benchmark": "preprocess",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python benchmarks/preprocess.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "load_average_at_end": os.getloadavg()},
        "params": params.as_dict(),
        "results": results,
        "table": table,
    }
    args.save.mkdir(parents=True, exist_ok=True)
    path = args.save / f"preprocess-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"\nsaved {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
