"""The real-face development benchmark: fr-mer's pipeline variants probed beside the plain pipeline.

Not product code. On a development set written by ``fr-mer synth --faces`` (docs/benchmarks-devbench.md),
every clip goes once through dlib's landmarks on the onset frame, then through each flow that a
variant needs (alignment crop x flow size x head motion before the flow), with fr-mer's own
functions (pipeline.align, pipeline.headmotion, pipeline.flow), and the plain pipeline of
benchmarks/plain_pipeline.py. What acts after the flow (head motion by the flow, normalisation,
strain) is derived from the same flow. Each variant's 28x28 inputs are probed LOSO
(fr_mer.probe, C 0.05) on (u, v) and (u, v, strain).

    python benchmarks/devbench.py --root DEV/casme2 --out benchmarks/results/devbench/casme2 \
        [--features /tmp/devbench-features.npz] [--quick]

Writes OUT/rows.json (every row: variant, channels, UF1, UAR, seconds per sample), OUT/predictions.csv
(every row's pooled predictions) and OUT/config.json; benchmarks/devbench_table.py prints the table.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_pipeline import cpu_model, read_gray, square_box  # noqa: E402

from fr_mer import atomic  # noqa: E402
from fr_mer.metrics import uar, uf1  # noqa: E402
from fr_mer.pipeline.align import AlignParams, FaceAligner, apply_matrix  # noqa: E402
from fr_mer.pipeline.flow import TVL1Params, flow_features, optical_strain, tvl1_flow  # noqa: E402
from fr_mer.pipeline.headmotion import compensate, compensate_flow  # noqa: E402
from fr_mer.pipeline.labels import CLASSES  # noqa: E402
from fr_mer.pipeline.readers import read_database  # noqa: E402
from fr_mer.probe import DEFAULT_C, probe_folds  # noqa: E402
from fr_mer.protocols import subject_folds  # noqa: E402

#: (name, crop, flow size, head motion before the flow). crop: an eye_distance of fr-mer's
#: template (0.36 is the default; 0.30 a wider crop), or "plain" (the landmark box + 25 % above).
FLOWS = [
    ("frmer-0.36-256", 0.36, 256, "none"),
    ("frmer-0.36-128", 0.36, 128, "none"),
    ("frmer-0.30-256", 0.30, 256, "none"),
    ("frmer-0.40-256", 0.40, 256, "none"),
    ("frmer-0.36-256-rigid", 0.36, 256, "rigid"),
    ("plain-256", "plain", 256, "none"),
    ("frmer-0.30-128", 0.30, 128, "none"),
    ("frmer-0.40-128", 0.40, 128, "none"),
    ("plain-128", "plain", 128, "none"),
]
QUICK_FLOWS = [FLOWS[0], FLOWS[-1]]
AFTER_FLOW = ("none", "nose_flow", "nose_median", "rigid_flow")
NORMALISATIONS = ("none", "minmax255")


def crop_pair(onset, apex, landmarks, crop, size):
    """(onset crop, apex crop, landmarks in crop px) for one crop rule."""
    if crop == "plain":
        x0, y0, x1, y1 = square_box(landmarks, onset.shape)
        crops = [cv2.resize(f[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA) for f in (onset, apex)]
        return crops[0], crops[1], (landmarks - [x0, y0]) * (size / (x1 - x0))
    aligner = FaceAligner(AlignParams(eye_distance=crop))
    matrix = aligner.transform(landmarks, size)
    return aligner.warp(onset, matrix, size), aligner.warp(apex, matrix, size), apply_matrix(matrix, landmarks)


def clip_variants(onset, apex, landmarks, flows, aligner, tvl1, seconds):
    """{(flow name, head motion, normalisation): (3, 28, 28)} for one clip."""
    out = {}
    for name, crop, size, before in flows:
        start = time.perf_counter()
        a, b, points = crop_pair(onset, apex, landmarks, crop, size)
        b, _ = compensate(a, b, points, before, aligner=aligner)
        seconds.setdefault(f"crop+{name}", []).append(time.perf_counter() - start)
        start = time.perf_counter()
        flow = tvl1_flow(a, b, tvl1)
        seconds.setdefault(f"tvl1 {size}", []).append(time.perf_counter() - start)
        for after in (AFTER_FLOW if before == "none" else ("none",)):
            start = time.perf_counter()
            compensated, _ = compensate_flow(flow, points, after)
            u, v = compensated[..., 0], compensated[..., 1]
            strain = optical_strain(u, v)
            for normalisation in NORMALISATIONS:
                out[name, after if before == "none" else before, normalisation] = flow_features(
                    u, v, strain, normalisation=normalisation)
            seconds.setdefault(f"after {after} {size}", []).append(time.perf_counter() - start)
    return out


def save_features(path: Path, per_clip: list[dict], meta: dict) -> None:
    """Every variant's inputs of the clips done so far (written whole, then renamed: resumable)."""
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, meta=json.dumps(meta),
                            **{"|".join(v): np.stack([c[v] for c in per_clip]) for v in per_clip[0]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="a casme2-layout development set")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--features", type=Path, default=None, help="npz of every variant's inputs (reused)")
    parser.add_argument("--quick", action="store_true", help="fr-mer's default crop and the plain one only")
    parser.add_argument("--flows", default=None, help="comma-separated names of FLOWS to run (default: all)")
    parser.add_argument("--probe-only", action="store_true",
                        help="probe the clips already in --features (a run stopped early: its first subjects)")
    parser.add_argument("--head-motions", default=None,
                        help="comma-separated head-motion methods to probe (default: every one computed)")
    parser.add_argument("--variants", default=None,
                        help="';'-separated FLOW|HEAD_MOTION|NORMALISATION|CHANNELS rows to probe (default: all)")
    parser.add_argument("--stride", type=int, default=1, help="every STRIDE-th clip of each subject (CPU time)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    flows = QUICK_FLOWS if args.quick else FLOWS
    if args.flows:
        flows = [f for f in FLOWS if f[0] in args.flows.split(",")]
    clips = [c for c in read_database("casme2", args.root, None) if c.usable and c.label]
    clips = [c for s in sorted({c.subject for c in clips})
             for c in sorted((c for c in clips if c.subject == s), key=lambda c: c.key)[::args.stride]]
    aligner, tvl1 = FaceAligner(AlignParams()), TVL1Params()
    seconds: dict[str, list[float]] = {}
    per_clip, meta = [], {"keys": [], "labels": [], "subjects": [], "seconds": seconds}
    if args.features and args.features.is_file():  # resume: the clips already done
        stored = np.load(args.features, allow_pickle=False)
        meta = json.loads(str(stored["meta"]))
        seconds = meta["seconds"]
        variants = [tuple(k.split("|")) for k in stored.files if k != "meta"]
        per_clip = [{v: stored["|".join(v)][i] for v in variants} for i in range(len(meta["keys"]))]
    done = set(meta["keys"])
    for n, clip in enumerate(clips):
        if args.probe_only:
            break
        if clip.key in done:
            continue
        onset, apex = read_gray(clip.onset_path), read_gray(clip.apex_path)
        start = time.perf_counter()
        landmarks = aligner.landmarks(onset)
        seconds.setdefault("landmarks", []).append(time.perf_counter() - start)
        if landmarks is None:
            print(f"{clip.key}: no face found, skipped", flush=True)
            continue
        per_clip.append(clip_variants(onset, apex, landmarks, flows, aligner, tvl1, seconds))
        meta["keys"].append(clip.key)
        meta["labels"].append(CLASSES.index(clip.label))
        meta["subjects"].append(clip.subject)
        print(f"{n + 1}/{len(clips)} {clip.key}", flush=True)
        if args.features and (len(per_clip) % 3 == 0 or n == len(clips) - 1):
            save_features(args.features, per_clip, meta)
    features = {v: np.stack([c[v] for c in per_clip]) for v in per_clip[0]}
    labels, subjects, keys = np.asarray(meta["labels"]), np.asarray(meta["subjects"]), meta["keys"]
    folds = subject_folds(["casme2"] * len(keys), subjects)
    rows, predictions = [], []
    motions = args.head_motions.split(",") if args.head_motions else None
    wanted = set(args.variants.split(";")) if args.variants else None
    for (name, motion, normalisation), array in sorted(features.items()):
        if motions is not None and motion not in motions:
            continue
        for channels in (("u", "v"), ("u", "v", "strain")):
            if wanted is not None and "|".join((name, motion, normalisation, ",".join(channels))) not in wanted:
                continue
            results = probe_folds(array[:, :len(channels)], labels, keys, folds, len(CLASSES), C=DEFAULT_C)
            true = [t for r in results for t in r.true]
            pred = [p for r in results for p in r.pred]
            variant = f"{name} | head {motion} | {normalisation} | {','.join(channels)}"
            rows.append({"flow": name, "head_motion": motion, "normalisation": normalisation,
                         "channels": ",".join(channels), "uf1": round(uf1(true, pred), 4),
                         "uar": round(uar(true, pred), 4), "n": len(true)})
            predictions += [(variant, k, CLASSES[t], CLASSES[p]) for r in results
                            for k, t, p in zip(r.keys, r.true, r.pred)]
            print(f"{variant:60s} UF1 {rows[-1]['uf1']:.4f} UAR {rows[-1]['uar']:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    median = {k: round(float(np.median(v)), 4) for k, v in seconds.items()}
    (args.out / "rows.json").write_text(json.dumps({"rows": rows, "seconds_per_sample_median": median,
                                                    "n_clips": len(keys), "cpu": cpu_model(),
                                                    "date": time.strftime("%Y-%m-%d")}, indent=1))
    (args.out / "config.json").write_text(json.dumps({
        "root": str(args.root), "flows": [list(map(str, f)) for f in flows], "after_flow": AFTER_FLOW,
        "normalisations": NORMALISATIONS, "probe_C": DEFAULT_C, "tvl1": TVL1Params().__dict__,
        "threads": "cv2.setNumThreads(1), one process"}, indent=1))
    with open(args.out / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "sample", "true", "predicted"])
        writer.writerows(predictions)
    print("median seconds per sample:", median)


if __name__ == "__main__":
    main()
