"""The demo: synthetic release -> scan -> preprocess -> composite evaluation, as on real data.

The linear probe (:mod:`fr_mer.probe`) runs on the same cache and folds after the model, so
the demo prints how much of the model's score the inputs alone give.

Every stage is the library function the real commands call; the only
difference from a real run is where the frames come from (``pipeline.synth``)
and the composite list (the synthetic one the generator writes).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Protocol

import torch

from fr_mer.evaluation import EvalConfig, run_evaluation
from fr_mer.models import model_class
from fr_mer.pipeline.preprocess import PreprocessParams, preprocess, start_workers
from fr_mer.pipeline.scan import scan, write_table
from fr_mer.pipeline.synth import MANIFEST_NAME, generate_composite
from fr_mer.probe import ProbeConfig, run_probe
from fr_mer.results_folder import FULL_SCOPE
from fr_mer.run_plan import DEFAULT_SEEDS


@dataclasses.dataclass(frozen=True)
class RecordedFigures:
    """Figures measured elsewhere, printed beside the demo's for comparison and never recomputed by it."""

    source: str
    summary: str


#: The real-face development benchmark at fr-mer's defaults (docs/benchmarks-devbench.md). It needs the
#: composite's apex faces (../shared, not part of the repository), so the demo prints the recorded figures.
REAL_REFERENCE = RecordedFigures(
    source="docs/benchmarks-real.md, measured 2026-12-07",
    summary=("61 real CASME II micro-expressions of 15 subjects, the release's cropped frames, LOSO: linear "
             "probe UF1 0.7806, FR UF1 0.7546 ± 0.0392 (sd over 5 seeds); STSTNet's released flows of the "
             "same samples 0.7211 and 0.6644 ± 0.0181"),
)


class Reporter(Protocol):
    def start(self, stage: str, total: int) -> None: ...
    def advance(self, text: str = "") -> None: ...
    def finish(self) -> None: ...
    def say(self, line: str) -> None: ...


class SilentReporter:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, text: str = "") -> None:
        pass

    def finish(self) -> None:
        pass

    def say(self, line: str) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    subjects: int = 4  # per database
    clips_per_subject: int = 6
    seed: int = 0  # synthetic data
    model: str = "fr"
    seeds: tuple[int, ...] = DEFAULT_SEEDS  # training seeds
    # Fewer than FR's 20-epoch recipe: the synthetic task is learnt in 10, and the
    # demo has to finish in minutes on two cores (None: the model's recipe).
    epochs: int | None = 10
    jobs: int | None = None  # worker processes of preprocess, evaluate and probe (None: every usable core)


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(), *,
             device: torch.device | None = None, reporter: Reporter | None = None) -> dict:
    """Run every stage into ``out_dir``; returns the evaluation metrics (plus timings).

    Re-running with the same settings reuses what is done (the synthetic data,
    cached samples, finished folds).
    """
    out_dir = Path(out_dir)
    reporter = reporter or SilentReporter()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    timings: dict[str, float] = {}
    data_dir = out_dir / "data"

    # The synthetic faces are about 150 px wide, so the real-data default flow
    # size (256, chosen for 280-px faces) would only upsample them at 4x the cost.
    params = PreprocessParams(flow_size=128)
    start = time.perf_counter()
    manifest = data_dir / MANIFEST_NAME
    workers_ready = None
    if manifest.is_file() and _same_synth(manifest, settings):
        reporter.say(f"synth: reusing {data_dir}")
    else:
        # The synthesis is this process on one core: preprocessing's workers start on the others meanwhile
        # (imports, dlib's models: 1.5 s of CPU each, which would come before their first clips).
        workers_ready = start_workers(params, settings.jobs)
        total = 3 * settings.subjects * settings.clips_per_subject
        reporter.start("synth     ", total)
        generate_composite(data_dir, subjects=settings.subjects,
                           clips_per_subject=settings.clips_per_subject, seed=settings.seed,
                           overwrite=True, progress=lambda clip: reporter.advance())
        reporter.finish()
    timings["synth"] = time.perf_counter() - start

    start = time.perf_counter()
    composite_list = data_dir / "synthetic_3class_gt.csv"
    roots = {f"{db}_root": data_dir / db for db in ("casme2", "samm", "smic")}
    annotations = {f"{db}_annotations": _annotation_file(data_dir / db) for db in ("casme2", "samm")}
    result = scan("composite", composite_list=composite_list, **roots, **annotations)
    write_table(result.clips, out_dir / "scan.csv")
    statuses = {s: sum(c.status == s for c in result.clips) for s in ("ok", "repaired", "unusable")}
    reporter.say(f"scan: {len(result.clips)} clips ({', '.join(f'{k} {v}' for k, v in statuses.items())})"
                 f" -> {out_dir / 'scan.csv'}")
    timings["scan"] = time.perf_counter() - start

    start = time.perf_counter()
    if workers_ready is not None:
        workers_ready()
    reporter.start("preprocess", len(result.clips))
    pre = preprocess(result.clips, out_dir / "cache.h5", params, jobs=settings.jobs,
                     progress=lambda outcome: reporter.advance())
    reporter.finish()
    for line in pre.lines():
        reporter.say(line)
    timings["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    recipe = model_class(settings.model).recipe.replace(epochs=settings.epochs)
    config = EvalConfig(model=settings.model, protocol="composite", recipe=recipe, seeds=settings.seeds,
                        composite_list=str(composite_list))
    metrics = run_evaluation(
        out_dir / "cache.h5", out_dir / "results", config, device=device, jobs=settings.jobs,
        on_start=lambda total: reporter.start("evaluate  ", total),
        on_fold=lambda fold, resumed: reporter.advance(f"seed {fold.seed} {fold.database}/{fold.subject}"),
    )
    reporter.finish()
    timings["evaluate"] = time.perf_counter() - start

    # The linear probe on the same cache and folds: how much of the score the inputs alone give.
    start = time.perf_counter()
    probe = run_probe(out_dir / "cache.h5", out_dir / "probe",
                      ProbeConfig(protocol="composite", composite_list=str(composite_list)), jobs=settings.jobs)
    metrics["probe"] = {"uf1": probe[FULL_SCOPE]["uf1"], "uar": probe[FULL_SCOPE]["uar"],
                        "seconds": round(time.perf_counter() - start, 1)}
    metrics["demo_timings_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    (out_dir / "demo.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _annotation_file(root: Path) -> Path | None:
    for pattern in ("*.xlsx", "*.csv"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    return None


def _same_synth(manifest: Path, settings: DemoSettings) -> bool:
    try:
        recorded = json.loads(manifest.read_text()).get("settings", {})
    except (OSError, ValueError):
        return False
    return (recorded.get("subjects") == settings.subjects
            and recorded.get("clips_per_subject") == settings.clips_per_subject
            and recorded.get("seed") == settings.seed)
