"""`fr-mer evaluate`: a protocol's evaluation (LOSO, leave one database out, MEGC2018), over seeds, resumable."""
from __future__ import annotations

from pathlib import Path

import click

from fr_mer.commands.common import (allow_incomplete_option, jobs_option, model_options, protocol_options,
                                    resolve_protocol, resolve_training)
from fr_mer.evaluation import EvalConfig, run_evaluation
from fr_mer.limits import MAX_FOLD_BATCH, MAX_SEED, MAX_SEEDS
from fr_mer.output_paths import check_output, check_results_folder
from fr_mer.pipeline.cache import check_finished
from fr_mer.results_folder import SUMMARY_FILE, recorded_fold_batch
from fr_mer.run_plan import DEFAULT_SEEDS, default_fold_batch
from fr_mer.selection_grid import read_select_file


class FoldProgress:
    """A progress bar over seeds x folds, opened once the number of folds is known."""

    def __init__(self) -> None:
        self.bar = None
        self.counts = {"trained": 0, "resumed": 0}

    def start(self, total: int) -> None:
        self.bar = click.progressbar(length=total, label="folds", show_pos=True, show_eta=True,
                                     item_show_func=lambda text: text)
        self.bar.__enter__()

    def update(self, result, resumed: bool) -> None:
        self.counts["resumed" if resumed else "trained"] += 1
        self.bar.update(1, f"seed {result.seed} {result.database}/{result.subject}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@click.command("evaluate")
@click.option("--cache", type=click.Path(path_type=Path), required=True,
              help="Cache written by `fr-mer preprocess` or `fr-mer import-ststnet`.")
@protocol_options
@model_options
@click.option("--seeds", type=click.IntRange(min=1, max=MAX_SEEDS), default=len(DEFAULT_SEEDS), show_default=True,
              help="Number of seeds (0..N-1); results are means and standard deviations over them.")
@click.option("--first-seed", type=click.IntRange(min=0, max=MAX_SEED - MAX_SEEDS),
              default=0, show_default=True, help="First seed of the range.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=None,
              help="Train nothing: load one state dict per held-out subject from this folder "
                   "(sub01.pth, s01.pth, 006.pth, as STSTNet released them).")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Hold out this fraction of the TRAINING subjects per fold and log their UF1 "
                   "(never the test subject); 0 trains on all training subjects.")
@click.option("--fold-batch", type=click.IntRange(min=0, max=MAX_FOLD_BATCH), default=None,
              help="Train this many folds of a seed together as one stacked model (0: all folds of a "
                   "seed); each fold trains as it would alone. Default: a resumed run's value, else 0 on "
                   "CUDA (many times faster) and 1 on the CPU (where stacking is slower).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Train the folds on a dask.distributed cluster: the scheduler's address (tcp://host:8786) "
                   "or scheduler file (.json). --cache and --out must be shared with the workers; --device "
                   "is resolved on each worker (docs/cluster.md). Needs fr-mer[cluster].")
@click.option("--ensemble", is_flag=True,
              help="Also report the ensemble of the seeds (the mean of their probabilities per sample) in "
                   "metrics.json and ensemble_predictions.csv, apart from the single seeds' mean and sd.")
@click.option("--select", "select_file", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Nested selection: a JSON grid of recipe values and model options (docs/protocols.md#nested-"
                   "selection). Per fold, each candidate is scored on inner subject folds of the TRAINING "
                   "subjects only; the best is retrained on them and predicts the held-out subject once. Costs "
                   "candidates x inner folds + 1 fits per fold.")
@click.option("--audit-selection", is_flag=True,
              help="Also log each held-out subject's predictions after every epoch (used for nothing else) and "
                   "report, apart from the results, what choosing epochs on them would have scored: best epoch "
                   "per subject, best single epoch (OUT/selection_audit.json, .png; every fold's per-epoch "
                   "predictions, from which it is recomputed, in OUT/epoch_predictions.npz; docs/protocols.md). The "
                   "training and results are unchanged. Trains fold by fold (not with --fold-batch or --weights).")
@jobs_option("Worker processes training folds (or fold stacks) at once, each writing its fold files as one "
             "process would [default: every usable core on the CPU, capped by the folds; 1 on CUDA and with "
             "--weights]. Each has --threads torch threads (default: the usable cores divided among them); "
             "the figures are those of one process at those threads. Not with --scheduler.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder.")
@click.option("--overwrite", is_flag=True, help="Discard finished folds in --out and start again.")
@allow_incomplete_option
@click.option("--from-end", is_flag=True,
              help="Work through the folds from the last one. Started beside a run with the same "
                   "options and --out, it shares the work: each process skips folds already written.")
def command(cache, protocol, database, classes, model_name, option_pairs, epochs, batch_size, lr, device, threads,
            deterministic, seeds, first_seed, weights_dir, composite_list, val_fraction, fold_batch, scheduler,
            ensemble, select_file, audit_selection, jobs, out, overwrite, allow_incomplete, from_end) -> None:
    """Evaluation of a protocol's folds with UF1/UAR over pooled predictions.

    Writes OUT/metrics.json, predictions.csv, folds.csv, summary.md and confusion
    plots (and with --audit-selection, selection_audit.json, .png and
    epoch_predictions.npz). An interrupted run resumes at the first unfinished fold.
    """
    if scheduler is not None and jobs is not None:
        raise click.UsageError("--jobs sets local worker processes; with --scheduler the cluster's workers "
                               "train the folds: give one of the two")
    # With --scheduler the workers train, each on --device as it resolves it; this process reads on the CPU.
    options, recipe, torch_device = resolve_training(model_name, option_pairs, epochs, batch_size, lr,
                                                     "cpu" if scheduler else device, threads, deterministic)
    check_output(out, "--out", {"--cache": cache, "--composite-list": composite_list, "--weights": weights_dir,
                                "--select": select_file}, folder=True)
    check_results_folder(out, "--out")
    warning = check_finished(cache, allow_incomplete=allow_incomplete)
    if warning:
        click.echo(warning, err=True)
    if fold_batch is None:
        fold_batch = default_fold_batch(model_name, recipe, torch_device, recorded_fold_batch(out),
                                        stacking=not audit_selection)
    choice = resolve_protocol(cache, protocol, database, classes, composite_list)
    select = read_select_file(select_file, model_name, recipe, options) if select_file else None
    config = EvalConfig(
        model=model_name, protocol=choice.protocol, database=choice.database, classes=choice.classes,
        options=options, recipe=recipe,
        seeds=tuple(range(first_seed, first_seed + seeds)),
        weights_dir=str(weights_dir) if weights_dir else None,
        composite_list=choice.composite_list, val_fraction=val_fraction,
        fold_batch=fold_batch, select=select,
    )
    where = f"the workers of {scheduler} ({device})" if scheduler else torch_device
    click.echo(f"{model_name} on {where}, {protocol}{' (' + choice.database + ')' if choice.database else ''}, "
               + ("released weights" if weights_dir else f"seeds {list(config.seeds)}"))
    progress = FoldProgress()
    try:
        run_evaluation(cache, out, config, device=device if scheduler else torch_device, overwrite=overwrite,
                       from_end=from_end, on_start=progress.start, on_fold=progress.update, scheduler=scheduler,
                       ensemble=ensemble, audit_selection=audit_selection, jobs=jobs, threads=threads)
    finally:
        progress.close()
    counts = progress.counts
    click.echo(f"\n{counts['trained']} folds trained, {counts['resumed']} resumed from {out}")
    click.echo((Path(out) / SUMMARY_FILE).read_text())
