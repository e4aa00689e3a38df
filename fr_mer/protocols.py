"""Folds of every protocol: leave one subject out, or leave one database out.

``composite`` (MEGC2019), ``loso`` (one database) and ``megc2018-cde`` (CASME II +
SAMM, objective classes) hold out every sample of one subject per fold; subjects
are distinct per database (``casme2/sub01`` is not ``smic/s01``). ``lodo`` (the
composite) and ``megc2018-hde`` (CASME II and SAMM) hold out one whole database
per fold and train on the others. Fold construction looks only at database and
subject ids, never at labels or scores.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from fr_mer.errors import FrMerError, ParameterError
from fr_mer.pipeline.labels import DATABASES, global_subject

PROTOCOLS = ("composite", "loso", "lodo", "megc2018-cde", "megc2018-hde")
#: Protocols whose folds hold out a whole database (the others hold out one subject).
DATABASE_PROTOCOLS = ("lodo", "megc2018-hde")
#: The ``name`` of a fold that holds out a whole database (no subject id has this form).
WHOLE_DATABASE = "all"


@dataclasses.dataclass(frozen=True)
class Fold:
    """One held-out subject (``name`` its canonical id: ``sub01``, ``006``, ``s01``) or, with
    ``name`` :data:`WHOLE_DATABASE`, every subject of ``database``."""

    database: str
    name: str
    test_index: np.ndarray
    train_index: np.ndarray

    @property
    def subject(self) -> str:
        return global_subject(self.database, self.name)

    @property
    def holds_out_database(self) -> bool:
        return self.name == WHOLE_DATABASE


def _database_order(database: str) -> tuple[int, str]:
    return (DATABASES.index(database) if database in DATABASES else len(DATABASES), database)


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
        key=lambda p: (*_database_order(p[0]), p[1]),
    )
    folds = []
    for database, subject in pairs:
        held = (databases[selection] == database) & (subjects[selection] == subject)
        folds.append(Fold(database, subject, selection[held], selection[~held]))
    return folds


def database_folds(databases: Sequence[str], selection: np.ndarray | None = None) -> list[Fold]:
    """One fold per database in ``selection``: test on all its samples, train on the other databases'."""
    databases = np.asarray(databases)
    if selection is None:
        selection = np.arange(len(databases))
    selection = np.asarray(selection, dtype=np.int64)
    present = sorted({str(databases[i]) for i in selection}, key=_database_order)
    if len(present) < 2:
        raise ParameterError(f"leaving one database out needs samples of two databases or more; "
                             f"these samples are all {present[0] if present else 'absent'}")
    folds = []
    for database in present:
        held = databases[selection] == database
        folds.append(Fold(database, WHOLE_DATABASE, selection[held], selection[~held]))
    return folds


def protocol_folds(protocol: str, databases: Sequence[str], subjects: Sequence[str]) -> list[Fold]:
    """The folds of ``protocol`` over samples already selected for it."""
    if protocol not in PROTOCOLS:
        raise ParameterError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol in DATABASE_PROTOCOLS:
        return database_folds(databases)
    return subject_folds(databases, subjects)


def fold_leak(fold: Fold, databases: Sequence[str], subjects: Sequence[str]) -> str | None:
    """What of the held-out side also appears in training (None when nothing does).

    A subject fold holds out exactly one subject, absent from training; a database
    fold holds out one database, none of whose samples is trained on.
    """
    test_subjects = {(databases[i], subjects[i]) for i in fold.test_index}
    train_subjects = {(databases[i], subjects[i]) for i in fold.train_index}
    if test_subjects & train_subjects:
        return f"subject {'/'.join(sorted(test_subjects & train_subjects)[0])} is on both sides"
    if fold.holds_out_database:
        if {databases[i] for i in fold.test_index} != {fold.database} or \
                fold.database in {databases[i] for i in fold.train_index}:
            return f"database {fold.database} is not held out alone"
    elif test_subjects != {(fold.database, fold.name)}:
        return f"the held-out side holds {len(test_subjects)} subjects"
    return None


class FoldLeakError(FrMerError, RuntimeError):
    """A fold whose held-out side also appears in its training side (:func:`checked_folds` refuses it)."""


def checked_folds(protocol: str, databases: Sequence[str], subjects: Sequence[str]) -> list[Fold]:
    """The protocol's folds of these samples (:func:`protocol_folds`), checked: nothing held out is trained on.

    Evaluation and the linear probe take their folds from here, so both see the same folds.
    """
    folds = protocol_folds(protocol, databases, subjects)
    for fold in folds:
        leak = fold_leak(fold, databases, subjects)
        if leak is not None:
            raise FoldLeakError(f"fold {fold.subject}: held-out side leaks into training ({leak})")
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
