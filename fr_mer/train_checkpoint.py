"""Train one model on a cache's protocol samples (optionally without one subject) and save its checkpoint.

The library call behind ``fr-mer train``: the protocol's samples are chosen as an
evaluation chooses them (:func:`~fr_mer.run_plan.loso_database`,
:func:`~fr_mer.pipeline.labels.resolve_label_space`, :func:`~fr_mer.data.load_dataset`),
the model is initialised from ``seed`` and trained with
:func:`~fr_mer.training.train_model`, and the checkpoint records the recipe, the
cache's preprocessing parameters and the label space's classes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from fr_mer.checkpoint import save_checkpoint
from fr_mer.data import load_dataset
from fr_mer.errors import ParameterError
from fr_mer.models import Recipe, create_model
from fr_mer.pipeline.labels import resolve_label_space
from fr_mer.randomness import seeded_initialisation
from fr_mer.run_plan import check_protocol_choice, loso_database, with_class_count
from fr_mer.training import TrainLog, train_model


@dataclasses.dataclass(frozen=True)
class TrainedCheckpoint:
    """What :func:`train_checkpoint` wrote: the checkpoint, the rows trained on, the training's log."""

    path: Path
    n_train: int
    database: str | None  # the loso database (given, or the cache's one)
    log: TrainLog


def excluded_rows(databases: np.ndarray, subjects: np.ndarray, subject: str | None) -> np.ndarray:
    """Rows of ``subject`` (``sub01``, ``006``, ``s01`` or ``casme2/sub01``); error when absent."""
    if not subject:
        return np.zeros(len(subjects), dtype=bool)
    database, _, name = subject.rpartition("/")
    mask = subjects == name
    if database:
        mask &= databases == database
    if not mask.any():
        raise ParameterError(f"--exclude-subject: no sample of subject {subject!r} in the cache "
                             "(ids: sub01, 006, s01, or database/id)")
    return mask


def train_checkpoint(cache: str | Path, out: str | Path, *, model: str, options: Mapping[str, object],
                     recipe: Recipe, device: torch.device, protocol: str = "composite",
                     database: str | None = None, classes: int | None = None,
                     composite_list: str | Path | None = None, exclude_subject: str | None = None,
                     seed: int = 0, on_start: Callable[[int], None] | None = None,
                     on_epoch: Callable[[int, float], None] | None = None) -> TrainedCheckpoint:
    """Train ``model`` (validated ``options``, ``recipe``) on the protocol's samples of ``cache`` but
    ``exclude_subject``'s, on ``device``, and save the checkpoint ``out``.

    ``on_start(n_train)`` is called once the rows are known, before training;
    ``on_epoch(epoch, loss)`` after each epoch.
    """
    check_protocol_choice(protocol, database, classes)
    database = loso_database(cache, protocol, database)
    label_space = resolve_label_space(protocol, database, classes)
    with seeded_initialisation(seed):
        network = create_model(model, **with_class_count(model, options, label_space))
    data = load_dataset(cache, network.inputs, device, protocol=protocol, database=database,
                        composite_list=Path(composite_list) if composite_list else None, label_space=label_space)
    train_rows = np.flatnonzero(~excluded_rows(data.databases, data.subjects, exclude_subject))
    if on_start is not None:
        on_start(len(train_rows))
    log = train_model(network, data, torch.as_tensor(train_rows), recipe, seed=seed, on_epoch=on_epoch)
    path = save_checkpoint(out, network, fold=exclude_subject, seed=seed, recipe=recipe,
                           preprocess_params=data.cache.params, classes=label_space.classes)
    return TrainedCheckpoint(path=path, n_train=len(train_rows), database=database, log=log)
