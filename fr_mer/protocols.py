"""Leave-one-subject-out folds: the MEGC2019 composite protocol and single-database LOSO.

A fold holds out every sample of one subject; subjects are distinct per database
(``casme2/sub01`` is not ``smic/s01``). Fold construction looks only at subject
ids, never at labels or scores.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from fr_mer.errors import ParameterError
from fr_mer.pipeline.labels import DATABASES

PROTOCOLS = ("composite", "loso")


@dataclasses.dataclass(frozen=True)
class Fold:
    """One held-out subject: ``name`` is its canonical id (``sub01``, ``006``, ``s01``)."""

    database: str
    name: str
    test_index: np.ndarray
    train_index: np.ndarray

    @property
    def subject(self) -> str:
        return f"{self.database}/{self.name}"


def subject_folds(databases: Sequence[str], subjects: Sequence[str],
                  selection: np.ndarray | None = None) -> list[Fold]:
    """LOSO folds over the samples in ``selection`` (default: all).

    Ordered by database (protocol order) then subject id, so fold order, and
    hence seeds derived from it, do not depend on the cache's row order.
    """
    databases = np.asarray(databases)
    subjects = np.asarray(subjects)
    if selection is None:
        selection = np.arange(len(subjects))
    selection = np.asarray(selection, dtype=np.int64)
    pairs = sorted(
        {(str(databases[i]), str(subjects[i])) for i in selection},
        key=lambda p: (DATABASES.index(p[0]) if p[0] in DATABASES else len(DATABASES), p[0], p[1]),
    )
    folds = []
    for database, subject in pairs:
        held = (databases[selection] == database) & (subjects[selection] == subject)
        folds.append(Fold(database, subject, selection[held], selection[~held]))
    return folds


def validation_split(train_index: np.ndarray, databases: Sequence[str], subjects: Sequence[str],
                     fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training samples by subject into (train, validation); never touches the test subject."""
    if not 0 < fraction < 1:
        raise ParameterError(f"validation fraction must be in (0, 1), got {fraction}")
    keys = np.array([f"{databases[i]}/{subjects[i]}" for i in train_index])
    unique = np.unique(keys)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(fraction * len(unique))))
    val_subjects = set(rng.choice(unique, size=n_val, replace=False).tolist())
    is_val = np.array([k in val_subjects for k in keys], dtype=bool)
    return train_index[~is_val], train_index[is_val]
