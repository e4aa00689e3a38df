"""`fr-mer demo`: the whole path on synthetic data, with no database, GPU or network."""
from __future__ import annotations

import time
from pathlib import Path

import click

from fr_mer.commands.common import jobs_option
from fr_mer.output_paths import check_writable_target
from fr_mer.data import resolve_device
from fr_mer.limits import MAX_EPOCHS, MAX_SEED, MAX_SEEDS, MAX_SYNTH_CLIPS, MAX_SYNTH_SUBJECTS
from fr_mer.models import list_models
from fr_mer.results_folder import SUMMARY_FILE
from fr_mer.run_plan import DEFAULT_SEEDS
from fr_mer.workers import set_process_threads


class BarReporter:
    """Progress bars for the demo's stages, on stderr."""

    def __init__(self) -> None:
        self.bar = None

    def start(self, stage: str, total: int) -> None:
        self.bar = click.progressbar(length=total, label=stage, show_pos=True, show_eta=True,
                                     item_show_func=lambda text: text, file=click.get_text_stream("stderr"))
        self.bar.__enter__()

    def advance(self, text: str = "") -> None:
        self.bar.update(1, text or None)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def say(self, line: str) -> None:
        click.echo(line)


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("fr-mer-demo"),
              show_default=True, help="Folder for the synthetic data, cache and results.")
@click.option("--subjects", type=click.IntRange(min=2, max=MAX_SYNTH_SUBJECTS), default=4, show_default=True,
              help="Synthetic subjects per database.")
@click.option("--clips-per-subject", type=click.IntRange(min=3, max=MAX_SYNTH_CLIPS), default=6, show_default=True,
              help="Clips per subject (classes balanced within a subject).")
@click.option("--model", type=click.Choice(list_models()), default="fr", show_default=True,
              help="Model to evaluate.")
@click.option("--seeds", type=click.IntRange(min=1, max=MAX_SEEDS), default=len(DEFAULT_SEEDS), show_default=True,
              help="Training seeds; the result is their mean and standard deviation.")
@click.option("--epochs", type=click.IntRange(min=1, max=MAX_EPOCHS), default=10, show_default=True,
              help="Training epochs (the synthetic task needs fewer than the real recipe).")
@jobs_option("Worker processes of preprocess, evaluate and probe, one core's share of threads each "
             "(default: every usable core; evaluate on CUDA: 1).")
@click.option("--data-seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True,
              help="Seed of the synthetic data.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def command(out, subjects, clips_per_subject, model, seeds, epochs, jobs, data_seed, device) -> None:
    """Synthesise a composite database, then scan, preprocess and evaluate it (MEGC2019 composite LOSO).

    Uses the same code path as real data: the synthetic clips are written in the
    CASME II, SAMM and SMIC-HS layouts with their annotation files. Re-running
    reuses finished work.
    """
    from fr_mer.demo import REAL_REFERENCE, DemoSettings, run_demo
    from fr_mer.metrics import mean_sd_text

    # Every option is checked before the first stage starts, so a bad one costs no synthesis.
    torch_device = resolve_device(device)
    set_process_threads()  # what runs in this process stays within the usable cores
    check_writable_target(out, "--out", folder=True)
    settings = DemoSettings(subjects=subjects, clips_per_subject=clips_per_subject, seed=data_seed,
                            model=model, seeds=tuple(range(seeds)), epochs=epochs, jobs=jobs)
    start = time.perf_counter()
    metrics = run_demo(out, settings, device=torch_device, reporter=BarReporter())
    click.echo((Path(out) / "results" / SUMMARY_FILE).read_text())
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in metrics["demo_timings_seconds"].items())
    click.echo(f"demo finished in {time.perf_counter() - start:.0f} s ({timings}); "
               f"UF1 {mean_sd_text(metrics['full']['uf1'], metrics['full']['uf1_std'])} (sd over seeds), "
               f"UAR {mean_sd_text(metrics['full']['uar'], metrics['full']['uar_std'])} (sd)")
    click.echo(f"linear probe on the same cache and folds (fr-mer probe): UF1 {metrics['probe']['uf1']:.4f}, "
               f"UAR {metrics['probe']['uar']:.4f}")
    click.echo(f"reports: {Path(out) / 'results'} (metrics.json, predictions.csv, summary.md, confusion_*.png), "
               f"{Path(out) / 'probe'}")
    click.echo(f"real micro-expressions, for comparison (not computed here: {REAL_REFERENCE.source}): "
               f"{REAL_REFERENCE.summary}")
