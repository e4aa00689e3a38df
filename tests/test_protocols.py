"""Fold construction on the official composite list (shipped with the package)."""
import numpy as np

from fr_mer.protocols import subject_folds, validation_split
from fr_mer.pipeline.composite import OFFICIAL_COUNTS, read_composite_list


def official_arrays():
    entries = read_composite_list()
    return (np.array([e.dataset for e in entries]), np.array([e.subject for e in entries]),
            np.array([e.label for e in entries]))


def test_official_list_has_442_samples_and_68_subjects():
    databases, subjects, labels = official_arrays()
    assert len(databases) == 442
    assert {db: int((databases == db).sum()) for db in OFFICIAL_COUNTS} == OFFICIAL_COUNTS
    assert (labels == "negative").sum() == 250 and (labels == "positive").sum() == 109
    assert (labels == "surprise").sum() == 83


def test_composite_has_68_folds_with_no_subject_on_both_sides():
    databases, subjects, _ = official_arrays()
    folds = subject_folds(databases, subjects)
    assert len(folds) == 68
    assert sum(f.database == "casme2" for f in folds) == 24
    assert sum(f.database == "samm" for f in folds) == 28
    assert sum(f.database == "smic" for f in folds) == 16
    covered = np.concatenate([f.test_index for f in folds])
    assert sorted(covered.tolist()) == list(range(442))
    for fold in folds:
        test_pairs = {(databases[i], subjects[i]) for i in fold.test_index}
        train_pairs = {(databases[i], subjects[i]) for i in fold.train_index}
        assert test_pairs == {(fold.database, fold.name)}
        assert not test_pairs & train_pairs
        assert len(fold.test_index) + len(fold.train_index) == 442


def test_subject_ids_are_distinct_across_databases():
    databases = np.array(["casme2", "smic", "casme2", "smic"])
    subjects = np.array(["s01", "s01", "s02", "s02"])  # same id string in two databases
    folds = subject_folds(databases, subjects)
    assert len(folds) == 4
    assert all(len(f.test_index) == 1 for f in folds)


def test_fold_order_does_not_depend_on_row_order():
    databases, subjects, _ = official_arrays()
    order = np.random.default_rng(0).permutation(len(subjects))
    a = [(f.database, f.name) for f in subject_folds(databases, subjects)]
    b = [(f.database, f.name) for f in subject_folds(databases[order], subjects[order])]
    assert a == b


def test_validation_split_uses_training_subjects_only():
    databases, subjects, _ = official_arrays()
    fold = subject_folds(databases, subjects)[0]
    train, val = validation_split(fold.train_index, databases, subjects, 0.2, seed=1)
    assert len(train) + len(val) == len(fold.train_index)
    held = {subjects[i] for i in fold.test_index}
    assert not {subjects[i] for i in val} & held
    assert not {(databases[i], subjects[i]) for i in val} & {(databases[i], subjects[i]) for i in train}
