"""The real development benchmark as a user runs it: scan -> preprocess -> probe -> FR, per pipeline variant.

Not product code. On the real CASME II development subjects (``../shared/data/casme2-real``), each
variant of ``fr-mer preprocess`` (its options in :data:`VARIANTS`) makes a cache with the command
line, then ``fr-mer probe`` and ``fr-mer evaluate --model fr`` score it LOSO within the development
subjects. Beside them, STSTNet's released 28x28 images of the same samples (``fr-mer
import-ststnet``) are scored alike. Every variant is scored on exactly the same samples: the rows
of the official composite list whose clip is in the development set (``dev3.csv``, written to
OUT), with ``--protocol composite --composite-list dev3.csv`` (LOSO over the development
subjects). With ``--five-classes`` the caches are also scored in CASME II's five classes
(``--protocol loso --database casme2 --classes 5``, every clip with one of the five emotions).

    python benchmarks/realdev.py --root ../shared/data/casme2-real \
        --released ../shared/data/megc2019/ststnet_flow --out benchmarks/results/realdev \
        --work /tmp/realdev [--variants default,template] [--seeds 5] [--subjects sub01,sub02]

Writes OUT/<variant>/{probe-uvs,probe-uv,fr}[-5]/ (the commands' results folders: config,
metrics, predictions) and OUT/<variant>/preprocess.json (the command, samples, CPU seconds per
sample, CPU model); caches stay in --work. A variant's finished folders are kept (rerun resumes).
``benchmarks/realdev_table.py`` prints the table from OUT.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py

from fr_mer.environment import cpu_model
from fr_mer.pipeline.composite import official_list_path, read_composite_list

#: Pipeline variants: ``fr-mer preprocess`` options (beyond --dataset, --root, --annotations).
VARIANTS = {
    "default": [],
    "template": ["--align", "crop=template"],
    "template-minmax": ["--align", "crop=template", "--normalisation", "minmax255"],
    "frame-128": ["--flow-size", "128"],
    "frame-no-head-motion": ["--head-motion", "none"],
    "frame-minmax": ["--normalisation", "minmax255"],
}
#: The released flows' row (imported, not preprocessed).
RELEASED = "released-ststnet"


def fr_mer(*args: str, log: Path | None = None) -> float:
    """Run ``fr-mer ARGS`` (this interpreter's); returns the CPU seconds it and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [str(Path(sys.executable).with_name("fr-mer")), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def link_or_copy(source: str, target: str) -> None:
    """``target`` as a hard link to ``source``; a copy where the two lie on different devices."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def cache_keys(cache: Path) -> set[str]:
    with h5py.File(cache, "r") as handle:
        return {k.decode() if isinstance(k, bytes) else str(k) for k in handle["samples/key"][:]}


def write_dev_list(out: Path, keys: set[str]) -> Path:
    """The official composite list's rows whose sample is in ``keys`` (the same samples for every row)."""
    rows = {e.row for e in read_composite_list() if e.key in keys}
    with open(official_list_path(), newline="") as handle:
        lines = [cells for number, cells in enumerate(csv.reader(handle), start=1) if number in rows]
    path = out / "dev3.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(lines)
    return path


def score(cache: Path, out: Path, dev_list: Path, seeds: int, five: bool, fr_args: list[str]) -> None:
    """probe (u, v, strain and u, v) and FR on ``cache``; each results folder once (kept when done)."""
    protocols = [("", ["--protocol", "composite", "--composite-list", str(dev_list)])]
    if five:
        protocols.append(("-5", ["--protocol", "loso", "--database", "casme2", "--classes", "5"]))
    for suffix, protocol in protocols:
        for name, args in ((f"probe-uvs{suffix}", ["probe", "--channels", "u,v,strain"]),
                           (f"probe-uv{suffix}", ["probe", "--channels", "u,v"]),
                           (f"fr{suffix}", ["evaluate", "--model", "fr", "--seeds", str(seeds), "--threads", "1",
                                            *fr_args])):
            folder = out / name
            if name.startswith("fr") and seeds == 0:
                continue
            if (folder / "metrics.json").is_file():
                continue
            fr_mer(*args, "--cache", str(cache), *protocol, "--out", str(folder))
            print(f"  {folder}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="the development set (casme2-real)")
    parser.add_argument("--annotations", type=Path, default=None, help="its sheet (default: the .xlsx in --root)")
    parser.add_argument("--released", type=Path, default=None, help="STSTNet's ststnet_flow folder (its row)")
    parser.add_argument("--out", required=True, type=Path, help="results (archived: predictions, configs)")
    parser.add_argument("--work", required=True, type=Path, help="scratch folder for the caches")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--seeds", type=int, default=5, help="FR seeds per variant (0: the probe only)")
    parser.add_argument("--subjects", default=None,
                        help="comma-separated subjects: a development root holding only them is linked in --work")
    parser.add_argument("--five-classes", action="store_true", help="also score CASME II's five classes")
    parser.add_argument("--fr-option", action="append", default=[],
                        help="extra `fr-mer evaluate` argument for FR (repeatable, e.g. --fr-option=--epochs=2)")
    args = parser.parse_args()
    annotations = args.annotations or next(args.root.glob("*.xlsx"))
    root = args.root
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.subjects:  # a release holding only these subjects: their frames hard-linked (copied across devices);
        # not symbolic links, which the scan refuses as leaving the dataset root
        root = args.work / "root"
        shutil.rmtree(root, ignore_errors=True)
        for subject in args.subjects.split(","):
            shutil.copytree((args.root / "Cropped" / subject).resolve(), root / "Cropped" / subject,
                            copy_function=link_or_copy)
    fr_args = [a for option in args.fr_option for a in option.split("=", 1)]
    fr_mer("scan", "--dataset", "casme2", "--root", str(root), "--annotations", str(annotations),
           "--out", str(args.work / "scan.csv"), log=args.out / "scan.txt")
    dev_list = None
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
        print(variant, flush=True)
        cache = args.work / f"{variant}.h5"
        out = args.out / variant
        out.mkdir(exist_ok=True)
        record = out / "preprocess.json"
        if not record.is_file():
            command = ["preprocess", "--dataset", "casme2", "--root", str(root), "--annotations", str(annotations),
                       "--out", str(cache), "--jobs", "1", "--overwrite", *VARIANTS[variant]]
            seconds = fr_mer(*command, log=out / "preprocess.txt")
            samples = len(cache_keys(cache))
            record.write_text(json.dumps({
                "command": "fr-mer " + " ".join([command[0], "--dataset", "casme2", "--root", "ROOT", "--annotations",
                                                 "SHEET", "--out", "CACHE", *command[9:]]),
                "samples": samples, "cpu_seconds_per_sample": round(seconds / max(samples, 1), 3),
                "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
        if dev_list is None:
            dev_list = write_dev_list(args.out, cache_keys(cache))
        score(cache, out, dev_list, args.seeds, args.five_classes, fr_args)
    if args.released is not None:
        print(RELEASED, flush=True)
        cache = args.work / "released.h5"
        if not cache.is_file():
            fr_mer("import-ststnet", "--images", str(args.released), "--out", str(cache))
        out = args.out / RELEASED
        out.mkdir(exist_ok=True)
        if dev_list is None:
            raise SystemExit("the released row needs at least one variant (its samples are the variants')")
        score(cache, out, dev_list, args.seeds, False, fr_args)


if __name__ == "__main__":
    main()
