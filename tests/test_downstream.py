"""Downstream probes: cross-validated sex AUROC and ridge regression on known-answer data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ae_batch.errors import DataError
from ae_batch.evaluation.downstream import cv_auroc, cv_regression, summarise_folds


def test_separable_data_gives_auroc_one() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = rng.standard_normal((60, 4))
    x[:, 0] += 6.0 * y  # class shift of 6 SD on one feature
    folds = cv_auroc(x, y, folds=5, repeats=2, seed=0)
    assert folds["sex_auroc"].min() == pytest.approx(1.0)


def test_random_labels_give_auroc_near_half() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 5))
    y = rng.integers(0, 2, 200)
    folds = cv_auroc(x, y, folds=5, repeats=4, seed=0)
    assert abs(folds["sex_auroc"].mean() - 0.5) < 0.1


def test_shape_columns_and_determinism() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 3))
    y = (x[:, 0] + rng.standard_normal(50) > 0).astype(float)  # float labels, as subjects.csv holds
    a = cv_auroc(x, y, folds=4, repeats=3, seed=7)
    assert list(a.columns) == ["repeat", "fold", "sex_auroc"]
    assert len(a) == 4 * 3
    assert list(a["repeat"]) == [r for r in range(3) for _ in range(4)]
    assert list(a["fold"]) == list(range(4)) * 3
    assert a["sex_auroc"].between(0, 1).all()
    pd.testing.assert_frame_equal(a, cv_auroc(x, y, folds=4, repeats=3, seed=7))
    assert not a["sex_auroc"].equals(cv_auroc(x, y, folds=4, repeats=3, seed=8)["sex_auroc"])


def test_higher_dimensional_input_is_flattened() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 20)
    x = rng.standard_normal((40, 2, 3))
    x[:, 0, 0] += 6.0 * y
    assert cv_auroc(x, y, folds=4, repeats=1)["sex_auroc"].min() == pytest.approx(1.0)


def test_too_few_of_one_class_raises() -> None:
    x = np.random.default_rng(4).standard_normal((30, 2))
    y = np.array([1] * 4 + [0] * 26)
    with pytest.raises(DataError, match=r"downstream\.folds=5.*\[26, 4\]"):
        cv_auroc(x, y, folds=5, repeats=1)
    assert len(cv_auroc(x, y, folds=4, repeats=1)) == 4  # exactly `folds` members is enough
    with pytest.raises(DataError):
        cv_auroc(x, np.zeros(30), folds=2, repeats=1)  # one class only


def test_regression_on_a_linear_target() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((120, 4))
    y = 2.0 * x[:, 0] - 1.0 * x[:, 2] + 0.5 + 0.1 * rng.standard_normal(120)
    folds = cv_regression(x, y, folds=5, repeats=2, seed=0)
    assert len(folds) == 10
    assert list(folds.columns) == ["repeat", "fold", "laterality_mae", "laterality_r2", "laterality_spearman"]
    assert (folds["laterality_r2"] > 0.9).all()
    assert (folds["laterality_spearman"] > 0.9).all()
    assert (folds["laterality_mae"] < 0.3).all()
    pd.testing.assert_frame_equal(folds, cv_regression(x, y, folds=5, repeats=2, seed=0))


def test_regression_on_noise_has_no_skill() -> None:
    rng = np.random.default_rng(6)
    folds = cv_regression(rng.standard_normal((100, 3)), rng.standard_normal(100), folds=5, repeats=2)
    assert folds["laterality_r2"].mean() < 0.1


def test_regression_needs_two_subjects_per_fold() -> None:
    with pytest.raises(DataError, match="at least 10"):
        cv_regression(np.zeros((9, 2)), np.arange(9.0), folds=5)


def test_summarise_folds() -> None:
    folds = pd.DataFrame({"repeat": [0, 0, 1], "fold": [0, 1, 0], "sex_auroc": [0.6, 0.8, 0.7]})
    out = summarise_folds(folds)
    assert out == pytest.approx({"sex_auroc_mean": 0.7, "sex_auroc_std": 0.1})
    assert np.isnan(summarise_folds(folds.iloc[:1])["sex_auroc_std"])
