"""`fr-mer train`: train one model on a cache (optionally without one subject) and save a checkpoint."""
from __future__ import annotations

from pathlib import Path

import click

from fr_mer.checkpoint import check_replaceable
from fr_mer.commands.common import (allow_incomplete_option, model_options, protocol_options, resolve_protocol,
                                    resolve_training)
from fr_mer.limits import MAX_SEED
from fr_mer.output_paths import check_output
from fr_mer.pipeline.cache import check_finished


@click.command("train")
@click.option("--cache", type=click.Path(path_type=Path), required=True, help="Cache to train on.")
@model_options
@click.option("--exclude-subject", default=None, metavar="ID",
              help="Leave this subject out of training (sub01, 006, s01, or database/id).")
@protocol_options
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True,
              help="Seed for initialisation and batch order.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Checkpoint file to write (.pt); an existing file is refused unless --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace --out when it is an fr-mer checkpoint (never another file).")
@allow_incomplete_option
def command(cache, model_name, option_pairs, epochs, batch_size, lr, device, threads, deterministic, exclude_subject,
            protocol, database, classes, composite_list, seed, out, overwrite, allow_incomplete) -> None:
    """Train a model on every labelled sample of the protocol (but --exclude-subject)."""
    from fr_mer.train_checkpoint import train_checkpoint

    options, recipe, torch_device = resolve_training(model_name, option_pairs, epochs, batch_size, lr,
                                                     device, threads, deterministic)
    check_output(out, "--out", {"--cache": cache, "--composite-list": composite_list}, folder=False)
    check_replaceable(out, overwrite)
    warning = check_finished(cache, allow_incomplete=allow_incomplete)
    if warning:
        click.echo(warning, err=True)
    choice = resolve_protocol(cache, protocol, database, classes, composite_list)
    bar = click.progressbar(length=recipe.epochs, label="epochs", show_eta=True)
    opened = []

    def start(n_train: int) -> None:
        click.echo(f"training {model_name} on {n_train} samples ({torch_device}), "
                   f"{recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr}")
        opened.append(bar.__enter__())

    try:
        trained = train_checkpoint(cache, out, model=model_name, options=options, recipe=recipe, device=torch_device,
                                   protocol=choice.protocol, database=choice.database, classes=choice.classes,
                                   composite_list=choice.composite_list, exclude_subject=exclude_subject, seed=seed,
                                   on_start=start, on_epoch=lambda epoch, loss: bar.update(1))
    finally:
        if opened:
            bar.__exit__(None, None, None)
    log = trained.log
    click.echo(f"{out}: final training loss {log.final_loss:.4f}, {log.seconds:.1f} s "
               f"({log.samples_per_second:.0f} samples/s)")
