"""fr-mer's apex spotter on real CASME II clips, against the coding sheet's apex.

Not product code: the measure of ``pipeline/spotting.py`` (the spotter ``--smic-apex spot``
uses) on real micro-expressions. For each annotated clip of a CASME II release (the
development set: ``../shared/data/casme2-real``, 15 subjects, 118 clips, onset to offset):

1. every frame onset..offset is read and the apex spotted exactly as preprocessing spots a
   clip without one (:func:`fr_mer.pipeline.preprocess.spot_pair`: one alignment found on the
   onset, every frame warped by it, :func:`fr_mer.pipeline.spotting.spot_apex`);
2. the frame error |spotted - sheet apex|: median, mean, share within 5 and 10 frames (25 and
   50 ms at 200 fps), beside the same figures for the middle frame (the rule SMIC pipelines
   use without a spotter). Clips whose sheet apex was repaired (sub05 EP09_05f: apex equal
   to the onset) have no apex to measure against and are left out of the errors.

With ``--probe``: three caches of the same clips by ``fr-mer preprocess``'s library (default
parameters): with the sheet's apex, with the apex left open so that preprocessing spots it
(``apex_rule='spot'``, the ``--smic-apex spot`` path), and with the middle frame; each probed
LOSO within the database (:mod:`fr_mer.probe`, the composite's 3 classes and CASME II's 5). The spotted
cache's apex column is checked against step 1's.

Prints a table with the CPU model and writes JSON (per-clip predictions included) under
``--out-dir``::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/spotting_real.py \\
        --root ../shared/data/casme2-real --probe --work /tmp/spotting
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import cv2

from fr_mer.environment import cpu_model, package_versions
from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.preprocess import PreprocessParams, is_pre_cropped, preprocess, read_gray, spot_pair
from fr_mer.pipeline.readers import read_database
from fr_mer.pipeline.readers.repairs import middle_frame
from fr_mer.pipeline.spotting import spot_apex, spotting_errors
from fr_mer.probe import ProbeConfig, run_probe

ROOT = Path(__file__).resolve().parents[1]
FPS = 200  # CASME II


def clip_middle(clip: Clip) -> int:
    """The middle frame of the clip's frames onset..offset, by the readers' rule."""
    return middle_frame([n for n in clip.frames if clip.onset_frame <= n <= clip.offset_frame])


def spot_clip(clip: Clip, params: PreprocessParams) -> dict[str, object]:
    """One clip's spotted apex (frame number) with its sheet apex, the middle frame and seconds."""
    numbers = sorted(n for n in clip.frames if clip.onset_frame <= n <= clip.offset_frame)
    start = time.perf_counter()
    frames = [read_gray(clip.frames[n]) for n in numbers]
    spotted = spot_pair(frames, 0, len(numbers) - 1, params, pre_cropped=is_pre_cropped(clip))
    return {
        "key": clip.key, "emotion": clip.emotion, "onset": clip.onset_frame, "offset": clip.offset_frame,
        "sheet_apex": clip.apex_frame, "apex_rule": clip.apex_rule, "frames": len(numbers),
        "spotted": numbers[spotted.index], "middle": clip_middle(clip),
        "seconds": round(time.perf_counter() - start, 3),
    }


def error_table(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    """Frame errors of the spotter and of the middle frame on the clips with an annotated apex."""
    measured = [r for r in rows if r["apex_rule"] == "annotated"]
    sheet = [r["sheet_apex"] for r in measured]
    return {rule: spotting_errors([r[rule] for r in measured], sheet).as_dict() for rule in ("spotted", "middle")}


def probe_caches(clips: list[Clip], work: Path, params: PreprocessParams, spotted: dict[str, int]) -> dict:
    """Preprocess the clips with the sheet's apex, the apex spotted and the middle frame; probe each."""
    from fr_mer.pipeline.cache import read_cache

    work.mkdir(parents=True, exist_ok=True)
    variants = {
        "annotated": clips,
        "spotted": [dataclasses.replace(c, apex_frame=None, apex_rule="spot") for c in clips],
        "middle": [dataclasses.replace(c, apex_frame=clip_middle(c), apex_rule="middle") for c in clips],
    }
    results: dict[str, dict] = {}
    for name, variant in variants.items():
        cache = work / f"{name}.h5"
        start = time.perf_counter()
        summary = preprocess(variant, cache, params, jobs=1)
        seconds = time.perf_counter() - start
        stored = read_cache(cache)
        if name == "spotted":
            apexes = {key: int(frame) for key, frame in zip(stored.keys, stored.meta["apex_frame"])}
            differ = sorted(k for k, frame in apexes.items() if spotted.get(k) not in (None, frame))
            if differ:
                raise SystemExit(f"{cache}: preprocessing spotted another apex than step 1 for {differ}")
        results[name] = {"cache": str(cache), "samples": len(stored), "made_now": summary.done,
                         "failed": summary.failed, "preprocess_seconds_this_run": round(seconds, 1)}
        for classes in (None, 5):
            out = work / f"probe-{name}-{classes or 3}"
            metrics = run_probe(cache, out, ProbeConfig(protocol="loso", database="casme2", classes=classes))
            results[name][f"probe_{classes or 3}"] = {"n": metrics["n_samples"], "uf1": metrics["full"]["uf1"],
                                                      "uar": metrics["full"]["uar"]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="CASME II release (e.g. ../shared/data/casme2-real)")
    parser.add_argument("--annotations", type=Path, default=None, help="coding sheet (default: beside the release)")
    parser.add_argument("--subjects", default="", help="comma-separated subjects (default: all)")
    parser.add_argument("--probe", action="store_true", help="also preprocess and probe with each apex")
    parser.add_argument("--work", type=Path, default=Path("spotting-work"), help="folder of the caches (--probe)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "spotting")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    subjects = {s.strip() for s in args.subjects.split(",") if s.strip()}
    clips = [c for c in read_database("casme2", args.root, args.annotations)
             if c.usable and (not subjects or c.subject in subjects)]
    if not clips:
        raise SystemExit(f"{args.root}: no usable clip{' of ' + ', '.join(sorted(subjects)) if subjects else ''}")
    params = PreprocessParams()
    rows = []
    for i, clip in enumerate(clips, 1):
        rows.append(spot_clip(clip, params))
        print(f"\r{i}/{len(clips)} {clip.key}   ", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    errors = error_table(rows)
    record: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_model(), "threads": 1,
        "versions": package_versions(), "root": str(args.root), "fps": FPS, "clips": len(rows),
        "subjects": sorted({c.subject for c in clips}), "params": params.as_dict(),
        "spotter": {**{name: p.default for name, p in inspect.signature(spot_apex).parameters.items()
                       if name in ("reference", "size", "window")},
                    "region": "the onset's landmarks' box, 15 % of its height added above (spot_pair)"},
        "seconds_per_clip": round(statistics.mean(r["seconds"] for r in rows), 3),
        "errors": errors, "predictions": rows,
    }
    if args.probe:
        record["probe"] = probe_caches(clips, args.work, params, {r["key"]: r["spotted"] for r in rows})

    print(f"CPU: {record['cpu']}; {len(rows)} clips of {len(record['subjects'])} subjects, "
          f"{errors['spotted']['n']} with an annotated apex")
    print("| apex | median error (frames) | mean | within 5 frames (25 ms) | within 10 (50 ms) |")
    print("|---|---|---|---|---|")
    for rule, e in errors.items():
        print(f"| {rule} | {e['median']:.1f} | {e['mean']:.1f} | {e['within']['5']:.3f} | {e['within']['10']:.3f} |")
    if args.probe:
        print("| cache apex | samples | probe UF1 / UAR, 3 classes | 5 classes |")
        print("|---|---|---|---|")
        for name, p in record["probe"].items():
            print(f"| {name} | {p['samples']} | {p['probe_3']['uf1']:.4f} / {p['probe_3']['uar']:.4f} "
                  f"(n={p['probe_3']['n']}) | {p['probe_5']['uf1']:.4f} / {p['probe_5']['uar']:.4f} "
                  f"(n={p['probe_5']['n']}) |")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"spotting-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(record, indent=1))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
