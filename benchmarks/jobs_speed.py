"""``--jobs`` measured as a user runs it: fr-mer commands' wall times, alone and two at once (issue 25).

Every figure is the wall clock of an ``fr-mer`` command started by this script (``python -m
fr_mer.cli``, this Python's environment), as a user would start it. Parts (``--parts``):

- ``evaluate``: ``fr-mer evaluate --jobs 2`` against ``--jobs 1`` on the demo's synthetic cache
  (FR, 3 seeds, 10 epochs, 36 folds); goal >= 1.7x on 2 idle cores. A third run, ``--jobs 1
  --threads 1``, trains every fold with the threads of a ``--jobs 2`` worker: its metrics must
  equal ``--jobs 2``'s (``same_metrics``);
- ``evaluate-dev`` (opt-in, about 6 minutes on 2 cores): the same three runs on longer folds, FR
  at its recipe (20 epochs) on the real CASME II development subjects (14 LOSO folds of about 11 s
  on one thread, ``--seeds 1``; the 61 samples of ``benchmarks/results/realdev/dev3.csv``): the
  cache of ``--dev-cache``, else one made (not timed) with ``fr-mer preprocess`` of
  ``SHARED/data/casme2-real`` at its defaults, as ``benchmarks/realdev.py``'s ``default`` row.
  The demo's folds last about a second, so the workers' fixed start-up (an interpreter, torch,
  ``torch._dynamo`` at the first optimiser step) weighs on them as it does not on real folds;
- ``demo``: one ``fr-mer demo`` alone, then two at once, each in a fresh folder (synthesis,
  preprocessing, evaluation, probe); goals: two at once <= 2.6x one alone, one alone <= 45 s;
- ``demo-jobs1``: the same with ``--jobs 1`` (one process computing on every core, the way
  before ``--jobs``), for comparison;
- ``demo-passive``: ``demo-jobs1`` with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep at
  once at a barrier instead of spinning first): what that setting alone changes;
- ``preprocess``: ``fr-mer preprocess --jobs 2`` of the demo's synthetic release, alone, then two at once;
- ``composite`` (opt-in, about 10 minutes on 2 cores): one FR seed of the real composite inputs
  end to end: ``fr-mer import-ststnet`` of ``SHARED/data/megc2019/ststnet_flow``, then
  ``fr-mer evaluate --model fr --seeds 1 --jobs 2``; goal <= 10 minutes on 2 idle cores.

A first ``fr-mer demo`` (not timed) makes the synthetic release and cache the parts share.
Writes ``jobs-<date>.json`` and ``.md`` into ``--save`` (default benchmarks/results/speed) and
prints the table, with the CPU (``fr_mer.environment.cpu_model``), the usable cores and the load
average before each measurement: figures from a loaded machine say nothing about an idle one.

    python benchmarks/jobs_speed.py                                  # evaluate, demo, preprocess
    python benchmarks/jobs_speed.py --parts evaluate,demo,demo-jobs1,preprocess,composite
    python benchmarks/jobs_speed.py --parts evaluate-dev [--dev-cache dev.h5]     # longer folds (real data)
    python benchmarks/jobs_speed.py --smoke --work /tmp/jobs-smoke   # tiny sizes: checks the script, no figures
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fr_mer.environment import cpu_flags, cpu_model, package_versions  # noqa: E402
from fr_mer.workers import usable_cores  # noqa: E402

PARTS = ("evaluate", "evaluate-dev", "demo", "demo-jobs1", "demo-passive", "preprocess", "composite")
DEFAULT_PARTS = "evaluate,demo,preprocess"
#: Metrics compared between runs (metrics.json's scopes): everything but times and the machine.
SCOPES = ("full", "casme2", "samm", "smic")


def fr_mer(*args: object) -> list[str]:
    return [sys.executable, "-m", "fr_mer.cli", *map(str, args)]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_at_once(commands: list[list[str]], logs: list[Path], env: dict[str, str] | None = None) -> dict:
    """Start ``commands`` together; their wall seconds (each, and until the last ended) and the load before."""
    before = load()
    start = time.perf_counter()
    processes = []
    for command, log in zip(commands, logs):
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "w")
        processes.append((subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                           env={**os.environ, **(env or {})}), handle))
    walls = []
    for process, handle in processes:
        process.wait()
        walls.append(round(time.perf_counter() - start, 1))
        handle.close()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(process.args)} failed (exit {process.returncode}); see {handle.name}")
    return {"load_before": before, "each_seconds": walls, "seconds": max(walls),
            "commands": [" ".join(c[2:]) for c in commands]}


def metrics_of(out: Path) -> dict:
    record = json.loads((out / "metrics.json").read_text())
    return {scope: record[scope] for scope in SCOPES if scope in record}


def demo_args(args) -> list[str]:
    return (["--subjects", "2", "--clips-per-subject", "3", "--seeds", "1", "--epochs", "1"] if args.smoke
            else []) + ["--device", "cpu"]


def annotations(root: Path) -> Path:
    return next(p for pattern in ("*.xlsx", "*.csv") for p in sorted(root.glob(pattern)))


def evaluate_jobs(args, part: str, common: list) -> dict:
    """``fr-mer evaluate COMMON`` with ``--jobs 1``, ``--jobs 2`` and ``--jobs 1 --threads 1`` (the threads of a
    ``--jobs 2`` worker: its metrics must equal ``--jobs 2``'s)."""
    runs = {}
    for name, extra in (("jobs1", ["--jobs", 1]), ("jobs2", ["--jobs", 2]),
                        ("jobs1-threads1", ["--jobs", 1, "--threads", 1])):
        out = args.work / f"{part}-{name}"
        shutil.rmtree(out, ignore_errors=True)
        runs[name] = run_at_once([fr_mer(*common, *extra, "--out", out)], [args.work / "logs" / f"{part}-{name}.log"])
        runs[name]["uf1"] = metrics_of(out)["full"]["uf1"]
    same = metrics_of(args.work / f"{part}-jobs2") == metrics_of(args.work / f"{part}-jobs1-threads1")
    return {"runs": runs, "speed_up": round(runs["jobs1"]["seconds"] / runs["jobs2"]["seconds"], 2),
            "same_metrics": same, "goal": "speed_up >= 1.7 on 2 idle cores; same_metrics"}


def part_evaluate(args, base: Path) -> dict:
    return evaluate_jobs(args, "evaluate", [
        "evaluate", "--cache", base / "cache.h5", "--composite-list", base / "data" / "synthetic_3class_gt.csv",
        "--model", "fr", "--device", "cpu", "--epochs", 1 if args.smoke else 10, "--seeds", 1 if args.smoke else 3])


def part_evaluate_dev(args, base: Path) -> dict:
    """:func:`evaluate_jobs` on the real development subjects (``--smoke``: the demo's release stands in)."""
    if args.smoke:
        cache, listing = base / "cache.h5", base / "data" / "synthetic_3class_gt.csv"
    else:
        listing = ROOT / "benchmarks" / "results" / "realdev" / "dev3.csv"
        cache = args.dev_cache or args.work / "dev.h5"
        if args.dev_cache is None and not cache.is_file():
            root = args.shared / "data" / "casme2-real"
            if not root.is_dir():
                raise SystemExit(f"--parts evaluate-dev: {root} is not there (give --shared, or --dev-cache)")
            print(f"making the development cache {cache} (not timed)", flush=True)
            run_at_once([fr_mer("preprocess", "--dataset", "casme2", "--root", root,
                                "--annotations", annotations(root), "--out", cache)],
                        [args.work / "logs" / "dev-preprocess.log"])
    record = evaluate_jobs(args, "evaluate-dev", [
        "evaluate", "--cache", cache, "--protocol", "composite", "--composite-list", listing, "--model", "fr",
        "--device", "cpu", "--seeds", 1, *(["--epochs", 1] if args.smoke else [])])
    return {**record, "cache": str(cache)}


def part_demo(args, name: str, extra: list[str], env: dict[str, str] | None = None) -> dict:
    outs = [args.work / f"{name}-{tag}" for tag in ("alone", "a", "b")]
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    command = [*fr_mer("demo", *demo_args(args), *extra)]
    alone = run_at_once([command + ["--out", str(outs[0])]], [args.work / "logs" / f"{name}-alone.log"], env)
    both = run_at_once([command + ["--out", str(out)] for out in outs[1:]],
                       [args.work / "logs" / f"{name}-{tag}.log" for tag in ("a", "b")], env)
    return {"alone": alone, "two_at_once": both, "ratio": round(both["seconds"] / alone["seconds"], 2),
            "env": env or {}, "goal": "ratio <= 2.6; alone <= 45 s on 2 idle cores" if name == "demo" else ""}


def part_preprocess(args, base: Path) -> dict:
    data = base / "data"
    dataset = ["--dataset", "composite", "--composite-list", data / "synthetic_3class_gt.csv",
               "--casme2-root", data / "casme2", "--casme2-annotations", annotations(data / "casme2"),
               "--samm-root", data / "samm", "--samm-annotations", annotations(data / "samm"),
               "--smic-root", data / "smic", "--flow-size", 128, "--jobs", 2]
    caches = [args.work / f"preprocess-{tag}.h5" for tag in ("alone", "a", "b")]
    for cache in caches:
        cache.unlink(missing_ok=True)
    alone = run_at_once([fr_mer("preprocess", *dataset, "--out", caches[0])],
                        [args.work / "logs" / "preprocess-alone.log"])
    both = run_at_once([fr_mer("preprocess", *dataset, "--out", cache) for cache in caches[1:]],
                       [args.work / "logs" / f"preprocess-{tag}.log" for tag in ("a", "b")])
    return {"alone": alone, "two_at_once": both, "ratio": round(both["seconds"] / alone["seconds"], 2)}


def part_composite(args) -> dict:
    images = args.shared / "data" / "megc2019" / "ststnet_flow"
    if not images.is_dir():
        raise SystemExit(f"--parts composite: {images} is not there (give --shared, the folder holding data/megc2019)")
    cache, out = args.work / "megc2019.h5", args.work / "composite-fr"
    cache.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    imported = run_at_once([fr_mer("import-ststnet", "--images", images, "--out", cache)],
                           [args.work / "logs" / "composite-import.log"])
    evaluate = ["evaluate", "--cache", cache, "--model", "fr", "--seeds", 1, "--jobs", 2, "--device", "cpu",
                "--out", out]
    if args.smoke:
        evaluate += ["--epochs", 1]
    evaluated = run_at_once([fr_mer(*evaluate)], [args.work / "logs" / "composite-evaluate.log"])
    metrics = metrics_of(out)["full"]
    return {"import": imported, "evaluate": evaluated, "seconds": round(imported["seconds"] + evaluated["seconds"], 1),
            "uf1": metrics["uf1"], "uar": metrics["uar"], "goal": "seconds <= 600 on 2 idle cores"}


def table(record: dict) -> str:
    rows = ["| measurement | alone / --jobs 1 (s) | two at once / --jobs 2 (s) | ratio | goal | load before |",
            "|---|---|---|---|---|---|"]
    parts = record["parts"]
    for name, label in (("evaluate", "`evaluate` --jobs 2 vs --jobs 1"),
                        ("evaluate-dev", "`evaluate` --jobs 2 vs --jobs 1, real development subjects")):
        if name in parts:
            p = parts[name]["runs"]
            rows.append(f"| {label} (same metrics: {parts[name]['same_metrics']}) | "
                        f"{p['jobs1']['seconds']} | {p['jobs2']['seconds']} | {parts[name]['speed_up']}x faster | "
                        f">= 1.7x | {p['jobs1']['load_before']}, {p['jobs2']['load_before']} |")
    for name in ("demo", "demo-jobs1", "demo-passive", "preprocess"):
        if name in parts:
            p = parts[name]
            label = {"demo": "two `fr-mer demo`", "demo-jobs1": "two `fr-mer demo --jobs 1`",
                     "demo-passive": "two `fr-mer demo --jobs 1`, OMP_WAIT_POLICY=PASSIVE",
                     "preprocess": "two `fr-mer preprocess --jobs 2`"}[name]
            goal = "<= 2.6x; alone <= 45 s" if name == "demo" else ""
            rows.append(f"| {label} at once vs one alone | {p['alone']['seconds']} | "
                        f"{' / '.join(map(str, p['two_at_once']['each_seconds']))} | {p['ratio']}x slower | {goal} | "
                        f"{p['alone']['load_before']}, {p['two_at_once']['load_before']} |")
    if "composite" in parts:
        p = parts["composite"]
        rows.append(f"| one FR seed of the real composite, import + `evaluate --jobs 2` (UF1 {p['uf1']:.4f}) | | "
                    f"{p['seconds']} | | <= 600 s | {p['import']['load_before']} |")
    machine = record["machine"]
    smoke = ", SMOKE RUN: no figures" if record["smoke"] else ""
    return (f"{record['date']}, {machine['cpu']} ({machine['cpu_vector_extension']}), {machine['usable_cores']} "
            f"usable cores, torch {machine['packages'].get('torch')}{smoke}\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=DEFAULT_PARTS, help=f"comma-separated, among {', '.join(PARTS)}")
    parser.add_argument("--work", type=Path, default=Path("runs/jobs-speed"), help="folder for the runs")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                        help="folder holding data/megc2019 (--parts composite)")
    parser.add_argument("--dev-cache", type=Path, default=None,
                        help="--parts evaluate-dev: a cache of the CASME II development subjects (default: made in "
                             "--work from SHARED/data/casme2-real)")
    parser.add_argument("--save", type=Path, default=None,
                        help="folder of the JSON and Markdown (default: benchmarks/results/speed; "
                             "with --smoke, --work)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: checks that the script runs, measures nothing")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose among {', '.join(PARTS)}")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    save = args.save or (args.work if args.smoke else ROOT / "benchmarks" / "results" / "speed")
    record = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "smoke": args.smoke,
              "machine": {"cpu": cpu_model(), "cpu_vector_extension": cpu_flags(), "usable_cores": usable_cores(),
                          "cpu_count": os.cpu_count(), "platform": platform.platform(), "packages": package_versions(),
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "parts": {}}
    base = args.work / "base"
    if any(p in parts for p in ("evaluate", "preprocess")) or (args.smoke and "evaluate-dev" in parts):
        print(f"making the shared synthetic release and cache in {base} (not timed)", flush=True)
        run_at_once([fr_mer("demo", *demo_args(args), "--out", base)], [args.work / "logs" / "base.log"])
    for part in parts:
        print(f"{part} ...", flush=True)
        if part == "evaluate":
            record["parts"][part] = part_evaluate(args, base)
        elif part == "evaluate-dev":
            record["parts"][part] = part_evaluate_dev(args, base)
        elif part == "demo":
            record["parts"][part] = part_demo(args, "demo", [])
        elif part == "demo-jobs1":
            record["parts"][part] = part_demo(args, "demo-jobs1", ["--jobs", "1"])
        elif part == "demo-passive":
            record["parts"][part] = part_demo(args, "demo-passive", ["--jobs", "1"], {"OMP_WAIT_POLICY": "PASSIVE"})
        elif part == "preprocess":
            record["parts"][part] = part_preprocess(args, base)
        elif part == "composite":
            record["parts"][part] = part_composite(args)
    save.mkdir(parents=True, exist_ok=True)
    stem = save / f"jobs-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    text = table(record)
    stem.with_suffix(".md").write_text(text)
    print(text)
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
