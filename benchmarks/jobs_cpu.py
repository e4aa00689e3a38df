"""Where the CPU time of ``fr-mer evaluate --jobs N`` goes outside the folds (issue 25): CPU seconds, not wall.

Not product code. Wall times on a machine shared with other work say little; the CPU seconds of
each process do not depend on what else runs (up to cache effects). This runs ``fr-mer evaluate``
in this process (the command's process) with two probes:

- the command's process: its CPU clock around importing the command (torch), around the run until
  the reports, and around the reports (``fr_mer.report.write_reports``: matplotlib, the PNGs);
- each worker: a wrapper of the worker's task (:func:`timed_chunk`, in this module, which the workers
  import) that appends, per task, the worker's CPU clock at its start and end (since the worker
  started: the first start is the worker's own start-up) and how much of it went to the cache read.

    python benchmarks/jobs_cpu.py --cache runs/jobs-speed/base/cache.h5 \\
        --composite-list runs/jobs-speed/base/data/synthetic_3class_gt.csv --epochs 10 --seeds 3 --jobs 2

(the demo's cache that ``benchmarks/jobs_speed.py`` makes in its ``--work``, or any cache) prints a table,
the numbers of docs/benchmarks-speed.md's "Where the time of evaluate --jobs 2 goes", and writes it,
with every task's record, as JSON into ``--work``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Set in the workers' environment (loky passes this process's): where each task's record is appended.
LOG_VARIABLE = "FR_MER_JOBS_CPU_LOG"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_chunk(jobs, plan, out_dir, device):
    """``fr_mer.evaluation.train_chunk``, recording this worker's CPU clock around it."""
    import fr_mer.evaluation as evaluation

    start = cpu_seconds()
    read = [0.0]
    load = evaluation.load_plan_data

    def timed_load(*args, **kwargs):
        begun = cpu_seconds()
        try:
            return load(*args, **kwargs)
        finally:
            read[0] += cpu_seconds() - begun

    evaluation.load_plan_data = timed_load
    try:
        trained = evaluation.train_chunk(jobs, plan, out_dir, device)
    finally:
        evaluation.load_plan_data = load
    record = {"pid": os.getpid(), "start": round(start, 3), "end": round(cpu_seconds(), 3),
              "cache_read": round(read[0], 3), "folds": sum(trained)}
    with open(os.environ[LOG_VARIABLE], "a") as log:
        log.write(json.dumps(record) + "\n")
    return trained


def summarise(tasks: list[dict]) -> dict:
    by_worker: dict[int, list[dict]] = {}
    for task in tasks:
        by_worker.setdefault(task["pid"], []).append(task)
    workers = []
    for pid, own in by_worker.items():
        own.sort(key=lambda t: t["start"])
        later = [t["end"] - t["start"] for t in own[1:]]
        gaps = [b["start"] - a["end"] for a, b in zip(own, own[1:])]
        workers.append({"pid": pid, "tasks": len(own), "before_first_task": own[0]["start"],
                        "first_task": round(own[0]["end"] - own[0]["start"], 3),
                        "other_tasks_mean": round(statistics.mean(later), 3) if later else None,
                        "cache_read": round(sum(t["cache_read"] for t in own), 3),
                        "between_tasks_mean": round(statistics.mean(gaps), 4) if gaps else None,
                        "total": own[-1]["end"]})
    return {"workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--composite-list", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's recipe")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/jobs-cpu"), help="results folder and the JSON")
    args = parser.parse_args()

    start = cpu_seconds()
    sys.path.insert(0, str(HERE))  # the workers import this module by name to run timed_chunk
    import fr_mer.evaluation as evaluation
    import fr_mer.report as report
    import jobs_cpu
    from fr_mer.cli import main as cli
    imported = cpu_seconds() - start

    args.work.mkdir(parents=True, exist_ok=True)
    out, log = args.work / "evaluate", args.work / "tasks.jsonl"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    os.environ[LOG_VARIABLE] = str(log.resolve())
    evaluation.train_chunk = jobs_cpu.timed_chunk
    reports = [0.0]
    write_reports = report.write_reports

    def timed_reports(*a, **k):
        begun = cpu_seconds()
        try:
            return write_reports(*a, **k)
        finally:
            reports[0] += cpu_seconds() - begun

    report.write_reports = timed_reports
    command = ["evaluate", "--cache", str(args.cache), "--model", "fr", "--device", "cpu", "--seeds", str(args.seeds),
               "--jobs", str(args.jobs), "--out", str(out)]
    if args.composite_list:
        command += ["--composite-list", str(args.composite_list)]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    begun = cpu_seconds()
    cli(command, standalone_mode=False)
    run = cpu_seconds() - begun
    record = {"command": "fr-mer " + " ".join(command), "command_process": {
        "imports": round(imported, 3), "run_before_reports": round(run - reports[0], 3),
        "reports": round(reports[0], 3)},
        **summarise([json.loads(line) for line in log.read_text().splitlines()])}
    (args.work / "jobs-cpu.json").write_text(json.dumps(record, indent=1) + "\n")
    process = record["command_process"]
    print(f"command's process: imports {process['imports']} s, run until the reports {process['run_before_reports']} s,"
          f" reports {process['reports']} s")
    print("| worker | tasks | before its first task | first task | other tasks (mean) | cache read | between tasks |")
    print("|---|---|---|---|---|---|---|")
    for w in record["workers"]:
        print(f"| {w['pid']} | {w['tasks']} | {w['before_first_task']} | {w['first_task']} | {w['other_tasks_mean']} | "
              f"{w['cache_read']} | {w['between_tasks_mean']} |")


if __name__ == "__main__":
    main()
