"""`fr-mer evaluate`: a protocol's evaluation (LOSO, leave one database out, MEGC2018), over seeds, resumable."""
from __future__ import annotations

from pathlib import Path

import click

from fr_mer.commands.common import check_writable_target, model_options, resolve_training
from fr_mer.data import cache_databases
from fr_mer.evaluation import EvalConfig, run_evaluation
from fr_mer.pipeline.cache import read_cache
from fr_mer.protocols import PROTOCOLS
from fr_mer.pipeline.labels import CASME3_CLASS_SPACES, DATABASE_TITLES
from fr_mer.run_plan import default_fold_batch
from fr_mer.selection import read_select_file


def loso_database(cache: Path, protocol: str, database: str | None) -> str | None:
    """``--database``, or for ``--protocol loso`` the cache's one database; several are a usage error
    that lists them."""
    if protocol != "loso" or database is not None:
        return database
    present = cache_databases(read_cache(cache))
    if len(present) > 1:
        raise click.UsageError(f"--protocol loso: {cache} holds samples of {', '.join(present)}; "
                               "choose one with --database")
    return present[0] if present else None


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
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="composite", show_default=True,
              help="composite: MEGC2019 68-subject LOSO over the pooled databases; loso: one database; "
                   "lodo: leave one database of the composite out; megc2018-cde: LOSO over CASME II + SAMM, "
                   "objective classes 1-5; megc2018-hde: train on one of them, test on the other.")
@click.option("--database", type=click.Choice(tuple(DATABASE_TITLES)), default=None,
              help="The database for --protocol loso (default: the cache's one database).")
@click.option("--classes", type=click.Choice([str(n) for n in CASME3_CLASS_SPACES]), default=None,
              help="CAS(ME)^3's class protocol: 3 (negative, positive, surprise), 4 (and others), "
                   "7 (its emotions). Default 3.")
@model_options
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Number of seeds (0..N-1); results are means and standard deviations over them.")
@click.option("--first-seed", type=click.IntRange(min=0), default=0, show_default=True, help="First seed of the range.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=None,
              help="Train nothing: load one state dict per held-out subject from this folder "
                   "(sub01.pth, s01.pth, 006.pth, as STSTNet released them).")
@click.option("--composite-list", type=click.Path(path_type=Path), default=None,
              help="Composite sample list (official format); default: the official MEGC2019 list.")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Hold out this fraction of the TRAINING subjects per fold and log their UF1 "
                   "(never the test subject); 0 trains on all training subjects.")
@click.option("--fold-batch", type=click.IntRange(min=0), default=None,
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
                   "per subject, best single epoch (OUT/selection_audit.json, .png; docs/protocols.md). The "
                   "training and results are unchanged. Trains fold by fold (not with --fold-batch or --weights).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes training folds (or fold stacks) at once, each writing its fold files as one "
                   "process would [default: every usable core on the CPU, capped by the folds; 1 on CUDA and with "
                   "--weights]. Each has --threads torch threads (default: the usable cores divided among them); "
                   "the figures are those of one process at those threads.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder.")
@click.option("--overwrite", is_flag=True, help="Discard finished folds in --out and start again.")
@click.option("--from-end", is_flag=True,
              help="Work through the folds from the last one. Started beside a run with the same "
                   "options and --out, it shares the work: each process skips folds already written.")
def command(cache, protocol, database, classes, model_name, option_pairs, epochs, batch_size, lr, device, threads,
            deterministic, seeds, first_seed, weights_dir, composite_list, val_fraction, fold_batch, scheduler,
            ensemble, select_file, audit_selection, jobs, out, overwrite, from_end) -> None:
    """Evaluation of a protocol's folds with UF1/UAR over pooled predictions.

    Writes OUT/metrics.json, predictions.csv, folds.csv, summary.md and confusion
    plots (and with --audit-selection, selection_audit.json and .png). An interrupted
    run resumes at the first unfinished fold.
    """
    if scheduler is not None and jobs is not None:
        raise click.UsageError("--jobs sets local worker processes; with --scheduler the cluster's workers "
                               "train the folds: give one of the two")
    # With --scheduler the workers train, each on --device as it resolves it; this process reads on the CPU.
    options, recipe, torch_device = resolve_training(model_name, option_pairs, epochs, batch_size, lr,
                                                     "cpu" if scheduler else device, threads, deterministic)
    check_writable_target(out, "--out", folder=True)
    if fold_batch is None:
        fold_batch = default_fold_batch(model_name, recipe, torch_device, out, stacking=not audit_selection)
    database = loso_database(cache, protocol, database)
    select = read_select_file(select_file, model_name, recipe, options) if select_file else None
    config = EvalConfig(
        model=model_name, protocol=protocol, database=database, classes=int(classes) if classes else None,
        options=options, recipe=recipe,
        seeds=tuple(range(first_seed, first_seed + seeds)),
        weights_dir=str(weights_dir) if weights_dir else None,
        composite_list=str(composite_list) if composite_list else None, val_fraction=val_fraction,
        fold_batch=fold_batch, select=select,
    )
    where = f"the workers of {scheduler} ({device})" if scheduler else torch_device
    click.echo(f"{model_name} on {where}, {protocol}{' (' + database + ')' if database else ''}, "
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
    click.echo((Path(out) / "summary.md").read_text())
