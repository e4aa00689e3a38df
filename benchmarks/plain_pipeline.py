"""The plain reference pipeline of the pipeline issue, probed beside fr-mer's own cache.

Not product code: a deliberately simple pipeline that tells how much linearly decodable motion a
database's clips hold, so that fr-mer's preprocessing can be held to it. Per clip:

1. dlib's 68 landmarks on the onset frame; the landmarks' bounding box with 25 % of its height
   added above (the forehead), made square;
2. onset and apex cropped to that box, resized to ``--size`` (256) px, TV-L1 onset -> apex with
   fr-mer's TV-L1 parameters;
3. the median flow of the nose region (landmarks 27-35) subtracted (head motion);
4. raw u, v and optical strain resized to 28 x 28 (INTER_AREA), no per-sample scaling.

Then the linear probe (:mod:`fr_mer.probe`) LOSO on (u, v) and (u, v, strain), optionally with each
channel min-max scaled per sample as STSTNet's inputs are, and, with ``--cache``, the same probe on
an fr-mer cache's ``flow`` column for comparison. Timings per sample are printed with the CPU model.

    python benchmarks/plain_pipeline.py --dataset casme2 --root DEV/casme2 --out plain.json \
        [--cache DEV/casme2.h5]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from fr_mer.metrics import uar, uf1
from fr_mer.pipeline.align import FaceAligner, AlignParams
from fr_mer.pipeline.flow import TVL1Params, optical_strain, tvl1_flow
from fr_mer.pipeline.labels import CLASSES
from fr_mer.pipeline.readers import read_database
from fr_mer.probe import DEFAULT_C, probe_folds
from fr_mer.protocols import subject_folds
from fr_mer.environment import cpu_model


def read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"{path}: not a readable image")
    return image


def square_box(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the landmarks' box, 25 % of its height added above, squared, inside the frame."""
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    y0 -= 0.25 * (y1 - y0)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = shape
    side = min(side, w, h)
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return x0, y0, x0 + int(round(side)), y0 + int(round(side))


def plain_features(onset: np.ndarray, apex: np.ndarray, landmarks: np.ndarray, size: int,
                   tvl1: TVL1Params) -> np.ndarray:
    """(3, 28, 28) raw u, v, strain of the plain pipeline."""
    x0, y0, x1, y1 = square_box(landmarks, onset.shape)
    crop = [cv2.resize(f[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA) for f in (onset, apex)]
    flow = tvl1_flow(crop[0], crop[1], tvl1)
    scale = size / (x1 - x0)
    nose = (landmarks[27:36] - [x0, y0]) * scale
    nx0, ny0 = np.floor(nose.min(0)).astype(int).clip(0, size - 1)
    nx1, ny1 = np.ceil(nose.max(0)).astype(int).clip(1, size)
    median = np.median(flow[ny0:ny1, nx0:nx1].reshape(-1, 2), axis=0)
    u, v = flow[..., 0] - median[0], flow[..., 1] - median[1]
    strain = optical_strain(u, v)
    return np.stack([cv2.resize(c, (28, 28), interpolation=cv2.INTER_AREA) for c in (u, v, strain)])


def minmax(features: np.ndarray) -> np.ndarray:
    lo = features.min(axis=(2, 3), keepdims=True)
    span = features.max(axis=(2, 3), keepdims=True) - lo
    return np.where(span > 0, (features - lo) / np.where(span > 0, span, 1), 0)


def score(name: str, features: np.ndarray, labels, databases, subjects, keys, C: float) -> dict:
    folds = subject_folds(databases, subjects)
    results = probe_folds(features, labels, keys, folds, len(CLASSES), C=C)
    true = [t for r in results for t in r.true]
    pred = [p for r in results for p in r.pred]
    row = {"variant": name, "uf1": round(uf1(true, pred), 4), "uar": round(uar(true, pred), 4),
           "n": len(true), "folds": len(folds)}
    print(f"{name:40s} UF1 {row['uf1']:.4f}  UAR {row['uar']:.4f}  ({len(true)} samples, {len(folds)} folds)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=["casme2", "samm", "smic"])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--annotations", type=Path, default=None)
    parser.add_argument("--size", type=int, default=256, help="side of the face crop TV-L1 runs on (px)")
    parser.add_argument("--C", type=float, default=DEFAULT_C, help="the probe's inverse regularisation")
    parser.add_argument("--cache", type=Path, default=None, help="an fr-mer cache of the same clips to probe too")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    args = parser.parse_args()

    clips = [c for c in read_database(args.dataset, args.root, args.annotations) if c.usable and c.label]
    aligner = FaceAligner(AlignParams())
    tvl1 = TVL1Params()
    features, labels, databases, subjects, keys = [], [], [], [], []
    timings = {"landmarks": 0.0, "crop_flow_strain": 0.0, "tvl1_only": 0.0}
    for clip in clips:
        onset, apex = read_gray(clip.onset_path), read_gray(clip.apex_path)
        start = time.perf_counter()
        landmarks = aligner.landmarks(onset)
        timings["landmarks"] += time.perf_counter() - start
        if landmarks is None:
            print(f"{clip.key}: no face found, skipped")
            continue
        start = time.perf_counter()
        features.append(plain_features(onset, apex, landmarks, args.size, tvl1))
        timings["crop_flow_strain"] += time.perf_counter() - start
        labels.append(CLASSES.index(clip.label))
        databases.append(clip.dataset)
        subjects.append(clip.subject)
        keys.append(clip.key)
    # TV-L1 alone at the same size, for the cost bound (fr-mer within 1.3x of it).
    probe_pair = [cv2.resize(read_gray(p), (args.size, args.size)) for p in (clips[0].onset_path, clips[0].apex_path)]
    start = time.perf_counter()
    for _ in range(5):
        tvl1_flow(probe_pair[0], probe_pair[1], tvl1)
    timings["tvl1_only"] = (time.perf_counter() - start) / 5 * len(features)
    features = np.stack(features)
    labels = np.asarray(labels)
    rows = [
        score("plain u,v", features[:, :2], labels, databases, subjects, keys, args.C),
        score("plain u,v,strain", features, labels, databases, subjects, keys, args.C),
        score("plain u,v minmax per sample", minmax(features[:, :2]), labels, databases, subjects, keys, args.C),
        score("plain u,v,strain minmax per sample", minmax(features), labels, databases, subjects, keys, args.C),
    ]
    if args.cache:
        from fr_mer.data import load_dataset
        import torch

        for channels in (("u", "v"), ("u", "v", "strain")):
            data = load_dataset(args.cache, {"flow": channels}, torch.device("cpu"), protocol="loso",
                                database=args.dataset)
            rows.append(score(f"fr-mer cache {','.join(channels)}", data.inputs["flow"].numpy(),
                              data.labels.numpy(), data.databases, data.subjects, data.keys, args.C))
    per_sample = {k: round(v / len(features), 4) for k, v in timings.items()}
    print(f"seconds per sample on {cpu_model()}: {per_sample}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "dataset": args.dataset, "root": str(args.root), "n_clips": len(features), "C": args.C,
        "size": args.size, "rows": rows, "seconds_per_sample": per_sample, "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
    }, indent=1))


if __name__ == "__main__":
    main()
