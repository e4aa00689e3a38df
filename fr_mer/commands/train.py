"""`fr-mer train`: train one model on a cache (optionally without one subject) and save a checkpoint."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from fr_mer.checkpoint import check_replaceable, save_checkpoint
from fr_mer.commands.common import model_options, resolve_training
from fr_mer.commands.evaluate import loso_database
from fr_mer.data import load_dataset
from fr_mer.models import create_model
from fr_mer.limits import MAX_SEED
from fr_mer.output_paths import check_output
from fr_mer.pipeline.cache import check_finished
from fr_mer.pipeline.labels import CASME3_CLASS_SPACES, DATABASE_TITLES
from fr_mer.protocols import PROTOCOLS
from fr_mer.randomness import seeded_initialisation
from fr_mer.run_plan import resolve_label_space, with_class_count
from fr_mer.training import train_model


def excluded_rows(databases: np.ndarray, subjects: np.ndarray, subject: str | None) -> np.ndarray:
    """Rows of ``subject`` (``sub01``, ``006``, ``s01`` or ``casme2/sub01``); error when absent."""
    if not subject:
        return np.zeros(len(subjects), dtype=bool)
    database, _, name = subject.rpartition("/")
    mask = subjects == name
    if database:
        mask &= databases == database
    if not mask.any():
        raise click.BadParameter(f"no sample of subject {subject!r} in the cache "
                                 "(ids: sub01, 006, s01, or database/id)", param_hint="--exclude-subject")
    return mask


@click.command("train")
@click.option("--cache", type=click.Path(path_type=Path), required=True, help="Cache to train on.")
@model_options
@click.option("--exclude-subject", default=None, metavar="ID",
              help="Leave this subject out of training (sub01, 006, s01, or database/id).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="composite", show_default=True,
              help="Which samples to train on: the composite list's (composite, lodo), one database's (loso), "
                   "CASME II + SAMM with objective classes 1-5 (megc2018-cde, megc2018-hde).")
@click.option("--database", type=click.Choice(tuple(DATABASE_TITLES)), default=None,
              help="The database for --protocol loso (default: the cache's one database).")
@click.option("--classes", type=click.Choice([str(n) for n in CASME3_CLASS_SPACES]), default=None,
              help="CAS(ME)^3's class protocol: 3, 4 (and others) or 7 (its emotions). Default 3.")
@click.option("--composite-list", type=click.Path(path_type=Path), default=None,
              help="Composite sample list; default: the official MEGC2019 list.")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True,
              help="Seed for initialisation and batch order.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Checkpoint file to write (.pt); an existing file is refused unless --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace --out when it is an fr-mer checkpoint (never another file).")
@click.option("--allow-incomplete", is_flag=True,
              help="Use a cache whose preprocess run has not finished (still running, or killed) with the "
                   "samples it holds; without it such a cache is refused.")
def command(cache, model_name, option_pairs, epochs, batch_size, lr, device, threads, deterministic, exclude_subject,
            protocol, database, classes, composite_list, seed, out, overwrite, allow_incomplete) -> None:
    """Train a model on every labelled sample of the protocol (but --exclude-subject)."""
    options, recipe, torch_device = resolve_training(model_name, option_pairs, epochs, batch_size, lr,
                                                     device, threads, deterministic)
    check_output(out, "--out", {"--cache": cache, "--composite-list": composite_list}, folder=False)
    check_replaceable(out, overwrite)
    warning = check_finished(cache, allow_incomplete=allow_incomplete)
    if warning:
        click.echo(warning, err=True)
    database = loso_database(cache, protocol, database)
    label_space = resolve_label_space(protocol, database, int(classes) if classes else None)
    with seeded_initialisation(seed):
        model = create_model(model_name, **with_class_count(model_name, options, label_space))
    data = load_dataset(cache, model.inputs, torch_device, protocol=protocol,
                        database=database, composite_list=composite_list, label_space=label_space)
    train_rows = np.flatnonzero(~excluded_rows(data.databases, data.subjects, exclude_subject))
    click.echo(f"training {model_name} on {len(train_rows)} samples ({torch_device}), "
               f"{recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr}")
    with click.progressbar(length=recipe.epochs, label="epochs", show_eta=True) as bar:
        log = train_model(model, data, torch.as_tensor(train_rows), recipe, seed=seed,
                          on_epoch=lambda epoch, loss: bar.update(1))
    save_checkpoint(out, model, fold=exclude_subject, seed=seed, recipe=recipe,
                    preprocess_params=data.cache.params, classes=label_space.classes)
    click.echo(f"{out}: final training loss {log.final_loss:.4f}, {log.seconds:.1f} s "
               f"({log.samples_per_second:.0f} samples/s)")
