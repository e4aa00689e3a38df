"""UF1/UAR against an independent computation (loops over samples, no shared code)."""
import itertools

import numpy as np
import pytest

from fr_mer.metrics import confusion_matrix, uar, uf1


def reference_uf1_uar(true, pred, n_classes=3):
    f1s, recalls = [], []
    for c in range(n_classes):
        tp = sum(1 for t, p in zip(true, pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(true, pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(true, pred) if t == c and p != c)
        n_c = sum(1 for t in true if t == c)
        if n_c == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
        recalls.append(tp / n_c)
    return sum(f1s) / len(f1s), sum(recalls) / len(recalls)


def test_hand_computed_case_with_a_class_never_predicted():
    true = [0, 0, 0, 1, 1, 2, 2, 2]
    pred = [0, 0, 1, 1, 0, 0, 1, 1]  # class 2 is never predicted
    # class 0: tp 2, fp 2, fn 1 -> F1 4/7, recall 2/3
    # class 1: tp 1, fp 3, fn 1 -> F1 2/6, recall 1/2
    # class 2: tp 0, fp 0, fn 3 -> F1 0, recall 0
    assert uf1(true, pred) == pytest.approx((4 / 7 + 2 / 6 + 0) / 3)
    assert uar(true, pred) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_matches_independent_computation_on_random_predictions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 60))
        true = rng.integers(0, 3, n).tolist()
        pred = rng.integers(0, 3, n).tolist()
        expected_f1, expected_ar = reference_uf1_uar(true, pred)
        assert uf1(true, pred) == pytest.approx(expected_f1)
        assert uar(true, pred) == pytest.approx(expected_ar)


def test_perfect_and_pooled_not_fold_averaged():
    assert uf1([0, 1, 2], [0, 1, 2]) == 1.0
    # Two folds: pooled UF1 differs from the mean of per-fold UF1s.
    fold_a = ([0, 0, 1], [0, 0, 0])
    fold_b = ([2, 2, 1], [2, 2, 1])
    pooled = uf1(fold_a[0] + fold_b[0], fold_a[1] + fold_b[1])
    averaged = (uf1(*fold_a) + uf1(*fold_b)) / 2
    assert pooled == pytest.approx(reference_uf1_uar(fold_a[0] + fold_b[0], fold_a[1] + fold_b[1])[0])
    assert pooled != pytest.approx(averaged)


def test_confusion_matrix_counts_and_validation():
    matrix = confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)


def test_all_label_permutations_of_a_small_case():
    for pred in itertools.product(range(3), repeat=4):
        true = [0, 1, 2, 2]
        expected = reference_uf1_uar(true, list(pred))
        assert (uf1(true, pred), uar(true, pred)) == pytest.approx(expected)
