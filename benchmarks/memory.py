"""Peak resident memory of ``fr-mer preprocess --jobs N`` as the number of clips grows (issue 15, item 5).

For each size, ``fr-mer synth --layout casme2`` writes that many clips (10 per
subject) into a work folder, then ``fr-mer preprocess --jobs N`` runs on them
into a fresh cache as a child process while this script samples the memory of
the whole process tree (the command and its joblib workers) every
``--interval`` seconds:

- ``tree peak``: the largest sum of the tree's resident set sizes (RSS) seen at
  one sample, the number that must fit in the machine's memory;
- ``per-process peak``: each process's own high-water mark (``VmHWM`` of
  ``/proc/<pid>/status``), the largest of the main process's and of any worker's.

psutil is used when installed (it comes with ``fr-mer[cluster]``), else
``/proc`` is read directly (Linux only).

    python benchmarks/memory.py                        # 100 and 1000 clips, --jobs 2, flow 256 px
    python benchmarks/memory.py --clips 100 400 --jobs 2 --work /tmp/memory-bench

Prints a Markdown table and saves JSON under benchmarks/results/.
Target: the tree peak flat in the number of clips and <= 1.5 GB at 256 px.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from fr_mer.environment import cpu_model

RESULTS = Path(__file__).parent / "results"
CLIPS_PER_SUBJECT = 10
TARGET_BYTES = 1.5e9


def _fr_mer(*args: str) -> list[str]:
    return [sys.executable, "-m", "fr_mer.cli", *args]


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s whole tree (itself included), from /proc."""
    try:
        import psutil

        root = psutil.Process(pid)
        return [pid] + [p.pid for p in root.children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # the process ended between two samples
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(command: list[str], interval: float) -> dict[str, object]:
    """Run ``command``; the tree's peak summed RSS and each process's VmHWM (bytes)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree_peak, high_water, samples = 0, {}, 0
    while process.poll() is None:
        pids = _children(process.pid)
        tree_peak = max(tree_peak, sum(_status_kb(pid, "VmRSS") for pid in pids) * 1024)
        for pid in pids:
            high_water[pid] = max(high_water.get(pid, 0), _status_kb(pid, "VmHWM") * 1024)
        samples += 1
        time.sleep(interval)
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    workers = [value for pid, value in high_water.items() if pid != process.pid]
    return {
        "wall_s": time.perf_counter() - start,
        "samples_taken": samples,
        "tree_peak_bytes": tree_peak,
        "main_peak_bytes": high_water.get(process.pid, 0),
        "worker_peak_bytes": max(workers, default=0),
        "processes_seen": len(high_water),
        "summary": output.strip().splitlines()[-4:],
    }


def synth(folder: Path, clips: int) -> Path:
    """The casme2-layout synthetic database of ``clips`` clips (written once, reused)."""
    annotations = folder / "CASME2-coding-20140508.xlsx"
    if not annotations.is_file():
        subjects = -(-clips // CLIPS_PER_SUBJECT)
        subprocess.run(_fr_mer("synth", "--out", str(folder), "--layout", "casme2", "--subjects", str(subjects),
                               "--clips-per-subject", str(CLIPS_PER_SUBJECT), "--overwrite"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return annotations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--flow-size", type=int, default=256)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fr-mer-memory-bench"),
                        help="folder for the synthetic databases and caches (kept, reused)")
    args = parser.parse_args(argv)

    rows = []
    for clips in args.clips:
        folder = args.work / f"casme2-{clips}"
        annotations = synth(folder, clips)
        cache = args.work / f"cache-{clips}.h5"
        cache.unlink(missing_ok=True)
        command = _fr_mer("preprocess", "--dataset", "casme2", "--root", str(folder), "--annotations",
                          str(annotations), "--out", str(cache), "--jobs", str(args.jobs),
                          "--flow-size", str(args.flow_size))
        row = {"clips": -(-clips // CLIPS_PER_SUBJECT) * CLIPS_PER_SUBJECT, **measure(command, args.interval)}
        rows.append(row)
        print(f"{row['clips']} clips: tree peak {row['tree_peak_bytes'] / 1e6:.0f} MB, "
              f"{row['wall_s']:.0f} s", file=sys.stderr)

    print(f"\n`{' '.join(['python', 'benchmarks/memory.py', *(argv or sys.argv[1:])])}` on {cpu_model()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; --jobs {args.jobs}, --flow-size {args.flow_size}\n")
    print("| clips | tree peak RSS (MB) | main process peak (MB) | largest worker peak (MB) | wall (s) |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['clips']} | {row['tree_peak_bytes'] / 1e6:.0f} | {row['main_peak_bytes'] / 1e6:.0f} | "
              f"{row['worker_peak_bytes'] / 1e6:.0f} | {row['wall_s']:.0f} |")
    worst = max(row["tree_peak_bytes"] for row in rows)
    print(f"\nTarget <= {TARGET_BYTES / 1e9:.1f} GB: {'met' if worst <= TARGET_BYTES else 'NOT met'} "
          f"(worst {worst / 1e9:.2f} GB)")
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": "memory",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", "benchmarks/memory.py", *(argv or sys.argv[1:])]),
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "jobs": args.jobs,
        "flow_size": args.flow_size,
        "results": rows,
    }
    path = RESULTS / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
