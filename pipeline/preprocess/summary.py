"""The counts and timings of a preprocessing run (:class:`PreprocessSummary`), and what ``fr-mer preprocess`` prints."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from fr_mer.pipeline.preprocess.sample import STAGES


@dataclasses.dataclass
class PreprocessSummary:
    """Counts of a run and where its time went."""

    out: Path
    total: int = 0
    done: int = 0
    skipped: int = 0
    repaired: int = 0
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Cached samples made again because their sheet row changed: key -> what changed.
    remade: dict[str, str] = dataclasses.field(default_factory=dict)
    flags: Counter = dataclasses.field(default_factory=Counter)
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall_seconds: float = 0.0
    jobs: int = 1
    cpu_seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.done / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def stage_fractions(self) -> dict[str, float]:
        """Share of each per-sample stage in their summed time (all workers; ``setup`` apart)."""
        per_sample = {k: v for k, v in self.stage_seconds.items() if k != "setup"}
        total = sum(per_sample.values())
        return {k: (v / total if total else 0.0) for k, v in per_sample.items()}

    def as_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "repaired": self.repaired,
            "failed": dict(self.failed),
            "remade": dict(self.remade),
            "flags": dict(self.flags),
            "stage_seconds": dict(self.stage_seconds),
            "wall_seconds": self.wall_seconds,
            "samples_per_second": self.samples_per_second,
            "jobs": self.jobs,
            "cpu_seconds": self.cpu_seconds,
        }

    def lines(self) -> list[str]:
        """The summary ``fr-mer preprocess`` prints."""
        out = [
            f"{self.out}: {self.done} done, {self.skipped} skipped (already cached), "
            f"{self.repaired} repaired, {len(self.failed)} failed "
            f"({self.total} clips, {self.wall_seconds:.1f} s, {self.jobs} job{'s' * (self.jobs > 1)})"
        ]
        if self.flags:
            out.append("flags: " + ", ".join(f"{k} {v}" for k, v in sorted(self.flags.items())))
        if self.done:
            fractions = self.stage_fractions()
            busy = [f"{k} {100 * v:.0f}%" for k, v in fractions.items() if self.stage_seconds[k] > 0]
            out.append(
                f"{self.samples_per_second:.2f} samples/s; time per stage: " + ", ".join(busy)
                + f" (plus {self.stage_seconds['setup']:.1f} s loading dlib's models)"
            )
        if self.remade:
            out.append(f"made again, their sheet rows changed since they were cached ({len(self.remade)}):")
            out.extend(f"  {key}: {change}" for key, change in sorted(self.remade.items()))
        if self.failed:
            out.append("failed:")
            out.extend(f"  {key}: {reason}" for key, reason in sorted(self.failed.items()))
        return out
