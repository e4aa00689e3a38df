"""The real development benchmark, stage by stage: pipeline variants probed on real CASME II clips.

Not product code. On the real CASME II development subjects (``../shared/data/casme2-real``, 15
subjects, the release's ``Cropped`` frames), every clip goes once through dlib's landmarks on its
onset frame, then through each flow a variant needs (crop rule x flow size), with fr-mer's own
functions (``pipeline.align``, ``pipeline.flow``, ``pipeline.headmotion``). What acts after the flow
(head motion by the flow, strain, the 28x28 resize, normalisation) is derived from the same flow.
Beside them: STSTNet's released 28x28 images of the same samples and the plain reference pipeline
(``plain_pipeline.py``'s crop). Each variant is probed LOSO within the development subjects
(``fr_mer.probe``: standardised logistic regression, C 0.05, classes balanced) on exactly the same
samples: the composite's 3 classes on the samples that also have a released image, and CASME II's
5 classes on every clip that has one.

    python benchmarks/realbench.py --root ../shared/data/casme2-real \
        --released ../shared/data/megc2019/ststnet_flow --out benchmarks/results/realbench \
        [--features /tmp/realbench.npz] [--subjects sub01,sub02]

Writes OUT/rows.json (variant, label space, channels, UF1, UAR, n), OUT/predictions.csv and
OUT/config.json; ``benchmarks/realbench_table.py`` prints the table from them.
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
from plain_pipeline import square_box  # noqa: E402

from fr_mer import atomic  # noqa: E402
from fr_mer.environment import cpu_model  # noqa: E402
from fr_mer.metrics import uar, uf1  # noqa: E402
from fr_mer.pipeline.align import AlignParams, FaceAligner, apply_matrix, whole_frame_matrix  # noqa: E402
from fr_mer.pipeline.flow import TVL1Params, flow_features, optical_strain, tvl1_flow  # noqa: E402
from fr_mer.pipeline.headmotion import compensate_flow  # noqa: E402
from fr_mer.pipeline.labels import CLASSES  # noqa: E402
from fr_mer.pipeline.readers import read_database  # noqa: E402
from fr_mer.probe import DEFAULT_C, probe_folds  # noqa: E402
from fr_mer.protocols import subject_folds  # noqa: E402

#: CASME II's five classes as the seed papers report them (sadness and fear left out).
FIVE_CLASSES = ("happiness", "disgust", "repression", "surprise", "others")

#: (name, crop rule, flow size). Crop rules: a float is fr-mer's eye template with that
#: eye_distance (0.36 was the default); "frame" the whole cropped frame scaled edge to edge onto
#: the square (the release's own crop); "native" the cropped frame as it is (its own size and
#: aspect, the flow squashed to 28x28 afterwards); "plain" the landmark box with 25 % added above.
FLOWS = [
    ("template-0.36-256", 0.36, 256),
    ("template-0.45-256", 0.45, 256),
    ("frame-256", "frame", 256),
    ("frame-128", "frame", 128),
    ("frame-64", "frame", 64),
    ("plain-256", "plain", 256),
    ("template-0.45-128", 0.45, 128),
    ("native", "native", 0),
    ("frame-28", "frame", 28),
]
AFTER_FLOW = ("none", "nose_median")
#: The label spaces probed: the composite's 3 classes (samples with a released image), CASME II's 5.
SPACES = ("composite3", "casme2-5")
NORMALISATIONS = ("none", "minmax255")
CHANNELS = {"uv": 2, "uvs": 3}


def read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"{path}: not a readable image")
    return image


def crop_pair(onset, apex, landmarks, rule, size):
    """(onset crop, apex crop, landmarks in crop px) of one crop rule at ``size`` px."""
    if rule == "native":
        return onset, apex, landmarks
    if rule == "plain":
        x0, y0, x1, y1 = square_box(landmarks, onset.shape)
        crops = [cv2.resize(f[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA) for f in (onset, apex)]
        return crops[0], crops[1], (landmarks - [x0, y0]) * (size / (x1 - x0))
    aligner = FaceAligner(AlignParams(eye_distance=rule) if rule != "frame" else AlignParams())
    matrix = whole_frame_matrix(onset.shape, size) if rule == "frame" else aligner.transform(landmarks, size)
    return aligner.warp(onset, matrix, size), aligner.warp(apex, matrix, size), apply_matrix(matrix, landmarks)


def clip_variants(onset, apex, landmarks, flows, tvl1, seconds):
    """{"flow|head motion|normalisation": (3, 28, 28)} for one clip."""
    out = {}
    for name, rule, size in flows:
        start = time.perf_counter()
        a, b, points = crop_pair(onset, apex, landmarks, rule, size)
        flow = tvl1_flow(a, b, tvl1)
        seconds.setdefault(name, []).append(time.perf_counter() - start)
        for after in AFTER_FLOW:
            compensated, _ = compensate_flow(flow, points, after)
            u, v = compensated[..., 0], compensated[..., 1]
            strain = optical_strain(u, v)
            for normalisation in NORMALISATIONS:
                out[f"{name}|{after}|{normalisation}"] = flow_features(u, v, strain, normalisation=normalisation)
    return out


def released_image(folder: Path, subject: str, clip: str) -> np.ndarray | None:
    """STSTNet's released (u, v, strain) 0..255 image of a sample, or None when not released."""
    path = folder / f"{subject}_{clip} .png"
    if not path.is_file():
        return None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.float32)  # BGR = strain, v, u
    return np.stack([image[..., 2], image[..., 1], image[..., 0]])


def save_features(path: Path, per_clip: list[dict], meta: dict) -> None:
    """Every variant's inputs of the clips done so far (written whole, then renamed: resumable)."""
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, meta=json.dumps(meta),
                            **{v: np.stack([c[v] for c in per_clip]) for v in per_clip[0]})


def probe_rows(features, meta, variants, released, wanted=SPACES):
    """Probe rows and pooled predictions of every variant, in the ``wanted`` label spaces, on the same samples."""
    keys, subjects, emotions = meta["keys"], np.asarray(meta["subjects"]), meta["emotions"]
    spaces = {}
    three = [i for i, k in enumerate(keys) if meta["labels"][i] is not None and k in released]
    spaces["composite3"] = (three, [CLASSES.index(meta["labels"][i]) for i in three], CLASSES)
    five = [i for i, e in enumerate(emotions) if e in FIVE_CLASSES]
    spaces["casme2-5"] = (five, [FIVE_CLASSES.index(emotions[i]) for i in five], FIVE_CLASSES)
    rows, predictions = [], []
    for space, (index, labels, names) in spaces.items():
        if space not in wanted:
            continue
        folds = subject_folds(["casme2"] * len(index), subjects[index])
        chosen = [keys[i] for i in index]
        table = {v: features[v][index] for v in variants}
        if space == "composite3":
            table["released-ststnet|as released|minmax255"] = np.stack([released[k] for k in chosen])
        for variant, array in table.items():
            for channels, n in CHANNELS.items():
                results = probe_folds(array[:, :n], np.asarray(labels), chosen, folds, len(names), C=DEFAULT_C)
                true = [t for r in results for t in r.true]
                pred = [p for r in results for p in r.pred]
                rows.append({"space": space, "variant": variant, "channels": channels,
                             "uf1": round(uf1(true, pred, len(names)), 4), "uar": round(uar(true, pred, len(names)), 4),
                             "n": len(true)})
                predictions += [(space, variant, channels, k, names[t], names[p]) for r in results
                                for k, t, p in zip(r.keys, r.true, r.pred)]
                print(f"{space:10s} {variant:42s} {channels:3s} UF1 {rows[-1]['uf1']:.4f} "
                      f"UAR {rows[-1]['uar']:.4f} n {len(true)}", flush=True)
    return rows, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="the development set (casme2-real)")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="its coding sheet (default: the .xlsx in --root)")
    parser.add_argument("--released", required=True, type=Path, help="STSTNet's released ststnet_flow folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--features", type=Path, default=None, help="npz of every variant's inputs (resumed)")
    parser.add_argument("--flows", default=None, help="comma-separated names of FLOWS (default: all)")
    parser.add_argument("--subjects", default=None, help="comma-separated subjects (default: all)")
    parser.add_argument("--limit", type=int, default=None,
                        help="stop after this many clips, the 3-class ones first (probe those)")
    parser.add_argument("--spaces", default=",".join(SPACES), help="comma-separated label spaces to probe")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    annotations = args.annotations or next(args.root.glob("*.xlsx"))
    flows = [f for f in FLOWS if args.flows is None or f[0] in args.flows.split(",")]
    clips = [c for c in read_database("casme2", args.root, annotations) if c.usable]
    if args.subjects:
        clips = [c for c in clips if c.subject in args.subjects.split(",")]
    clips.sort(key=lambda c: (c.label is None, c.key))  # the 3-class samples first: probed soonest
    tvl1, aligner = TVL1Params(), FaceAligner(AlignParams())
    seconds: dict[str, list[float]] = {}
    per_clip: list[dict] = []
    meta: dict = {"keys": [], "labels": [], "emotions": [], "subjects": [], "seconds": seconds}
    if args.features and args.features.is_file():
        stored = np.load(args.features, allow_pickle=False)
        meta = json.loads(str(stored["meta"]))
        seconds = meta["seconds"]
        per_clip = [{v: stored[v][i] for v in stored.files if v != "meta"} for i in range(len(meta["keys"]))]
    for n, clip in enumerate(clips):
        if clip.key in meta["keys"]:
            continue
        if args.limit is not None and len(meta["keys"]) >= args.limit:
            break
        onset, apex = read_gray(clip.onset_path), read_gray(clip.apex_path)
        start = time.perf_counter()
        landmarks = aligner.landmarks(onset, pre_cropped=True)
        seconds.setdefault("landmarks", []).append(time.perf_counter() - start)
        if landmarks is None:
            print(f"{clip.key}: no face found, skipped", flush=True)
            continue
        per_clip.append(clip_variants(onset, apex, landmarks, flows, tvl1, seconds))
        for field, value in (("keys", clip.key), ("labels", clip.label), ("emotions", clip.emotion),
                             ("subjects", clip.subject)):
            meta[field].append(value)
        print(f"{n + 1}/{len(clips)} {clip.key}", flush=True)
        if args.features and (len(per_clip) % 5 == 0 or n == len(clips) - 1):
            save_features(args.features, per_clip, meta)
    features = {v: np.stack([c[v] for c in per_clip]) for v in per_clip[0]}
    released = {}
    for key in meta["keys"]:
        _, subject, clip = key.split("/")
        image = released_image(args.released, subject, clip)
        if image is not None:
            released[key] = image
    rows, predictions = probe_rows(features, meta, sorted(features), released, args.spaces.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    median = {k: round(float(np.median(v)), 4) for k, v in seconds.items()}
    (args.out / "rows.json").write_text(json.dumps({
        "rows": rows, "seconds_per_sample_median": median, "n_clips": len(meta["keys"]), "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
    (args.out / "config.json").write_text(json.dumps({
        "root": str(args.root), "flows": [list(map(str, f)) for f in flows], "after_flow": AFTER_FLOW,
        "normalisations": NORMALISATIONS, "probe_C": DEFAULT_C, "tvl1": TVL1Params().__dict__,
        "landmarks": "dlib 68 points on the onset frame, pre_cropped detection",
        "threads": "cv2.setNumThreads(1), one process"}, indent=1) + "\n")
    with open(args.out / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["space", "variant", "channels", "sample", "true", "predicted"])
        writer.writerows(predictions)
    print("median seconds per sample:", median)


if __name__ == "__main__":
    main()
