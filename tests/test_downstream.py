"""Downstream probes: cross-validated sex AUROC and ridge regression on known-answer data, the long fold
table and its summary, and guards against leaking held-out subjects into the scaler."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold
from sklearn.preprocessing import StandardScaler

from ae_batch.config import DownstreamConfig
from ae_batch.errors import DataError
from ae_batch.evaluation.downstream import (
    cv_auroc,
    cv_regression,
    downstream_folds,
    fold_summary,
)

WHERE = "ehr/paper/bs16/seed0"


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
    with pytest.raises(DataError, match=r"^a/b: .*downstream\.folds=5.*\[26, 4\]"):
        cv_auroc(x, y, folds=5, repeats=1, where="a/b")
    assert len(cv_auroc(x, y, folds=4, repeats=1)) == 4  # exactly `folds` members is enough
    with pytest.raises(DataError):
        cv_auroc(x, np.zeros(30), folds=2, repeats=1)  # one class only
    with pytest.raises(DataError, match="coded 0/1"):
        cv_auroc(x, np.repeat([1, 2], 15), folds=2, repeats=1)


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


# --- the scaler is fitted inside every fold: per-fold equality with hand-written references ---------


def heavy_tailed(n: int = 60, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes shifted by 0.8 SD on every feature, each value then scaled by exp(2 N(0,1)): a feature's
    std over one fold's training subjects differs strongly from its std over all subjects, so a scaler
    that has seen the held-out subjects weighs the features differently and ranks them differently."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = (rng.standard_normal((n, d)) + 0.8 * y[:, None]) * np.exp(2.0 * rng.standard_normal((n, d)))
    return x, y


def reference_auroc(x: np.ndarray, y: np.ndarray, cfg: DownstreamConfig, leak: bool = False) -> np.ndarray:
    """Per-fold AUROC written out by hand; ``leak`` fits the scaler on all subjects first (the bug)."""
    cv = RepeatedStratifiedKFold(n_splits=cfg.folds, n_repeats=cfg.repeats, random_state=cfg.seed)
    scores = []
    for train, test in cv.split(x, y):
        scaler = StandardScaler().fit(x if leak else x[train])
        clf = LogisticRegression(C=cfg.C, max_iter=2000).fit(scaler.transform(x[train]), y[train])
        scores.append(roc_auc_score(y[test], clf.decision_function(scaler.transform(x[test]))))
    return np.array(scores)


def reference_regression(
    x: np.ndarray, y: np.ndarray, cfg: DownstreamConfig, leak: bool = False
) -> np.ndarray:
    """Per-fold (MAE, R², Spearman) of a ridge written out by hand, ``[folds × repeats, 3]``."""
    cv = RepeatedKFold(n_splits=cfg.folds, n_repeats=cfg.repeats, random_state=cfg.seed)
    rows = []
    for train, test in cv.split(x):
        scaler = StandardScaler().fit(x if leak else x[train])
        pred = Ridge(alpha=1.0).fit(scaler.transform(x[train]), y[train]).predict(scaler.transform(x[test]))
        rows.append(
            [mean_absolute_error(y[test], pred), r2_score(y[test], pred), spearmanr(pred, y[test]).statistic]
        )
    return np.array(rows)


def long_values(folds: pd.DataFrame, metric: str) -> np.ndarray:
    return folds.loc[folds["metric"] == metric, "value"].to_numpy()


def test_sex_auroc_scaler_is_fitted_inside_each_fold() -> None:
    """Guard: fitting the scaler on all test subjects before the split changes 7 of these 10 folds' AUROC
    (by up to 0.14); the probe must match the in-fold reference fold by fold to 1e-12."""
    x, y = heavy_tailed()
    cfg = DownstreamConfig(folds=5, repeats=2, seed=0, C=0.1)
    in_fold, leaky = reference_auroc(x, y, cfg), reference_auroc(x, y, cfg, leak=True)
    assert (np.abs(in_fold - leaky) > 0.02).sum() >= 3  # the planted data can tell the two apart
    subjects = pd.DataFrame({"subject_id": [f"s{i}" for i in range(len(y))], "sex": y.astype(float)})
    got = long_values(downstream_folds(x, subjects, cfg, WHERE), "sex_auroc")
    np.testing.assert_allclose(got, in_fold, rtol=0, atol=1e-12)


def test_laterality_scaler_is_fitted_inside_each_fold() -> None:
    """Guard, ridge: a scaler fitted on all subjects changes every fold's MAE here; match the in-fold
    reference per fold and metric to 1e-12."""
    x, _ = heavy_tailed(seed=1)
    lat = np.tanh(x[:, 0] + x[:, 1]) + 0.1 * np.random.default_rng(11).standard_normal(len(x))
    cfg = DownstreamConfig(folds=5, repeats=2, seed=0)
    in_fold, leaky = reference_regression(x, lat, cfg), reference_regression(x, lat, cfg, leak=True)
    assert (np.abs(in_fold[:, 0] - leaky[:, 0]) > 1e-3).sum() >= 5
    subjects = pd.DataFrame({"subject_id": [f"s{i}" for i in range(len(x))], "laterality": lat})
    folds = downstream_folds(x, subjects, cfg, WHERE)
    for j, metric in enumerate(["laterality_mae", "laterality_r2", "laterality_spearman"]):
        np.testing.assert_allclose(long_values(folds, metric), in_fold[:, j], rtol=0, atol=1e-12)


# --- downstream_folds: the long table ----------------------------------------------------------------


def test_downstream_folds_long_table_both_probes() -> None:
    rng = np.random.default_rng(7)
    n = 80
    sex = np.repeat([0.0, 1.0], n // 2)
    x = rng.standard_normal((n, 5))
    x[:, 0] += 2.0 * sex
    lat = x[:, 1] + 0.2 * rng.standard_normal(n)
    lat[:5] = np.nan  # subjects without a segmentation are left out of the laterality probe
    sex[-3:] = np.nan  # and subjects of unknown sex out of the sex probe
    subjects = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "sex": sex, "laterality": lat})
    cfg = DownstreamConfig(folds=4, repeats=2, seed=3)
    folds = downstream_folds(x, subjects, cfg, WHERE)
    assert list(folds.columns) == ["repeat", "fold", "metric", "value"]
    metrics = ["sex_auroc", "laterality_mae", "laterality_r2", "laterality_spearman"]
    assert list(dict.fromkeys(folds["metric"])) == metrics
    assert len(folds) == 4 * 2 * len(metrics)
    first = folds[folds["metric"] == "sex_auroc"]
    assert list(first["repeat"]) == [0] * 4 + [1] * 4 and list(first["fold"]) == [0, 1, 2, 3] * 2
    known = ~np.isnan(sex)
    np.testing.assert_array_equal(
        first["value"], cv_auroc(x[known], sex[known], 4, 2, 3, cfg.C)["sex_auroc"].to_numpy()
    )
    assert (long_values(folds, "laterality_r2") > 0.8).all()
    pd.testing.assert_frame_equal(folds, downstream_folds(x, subjects, cfg, WHERE))

    summary = fold_summary(folds)
    assert list(summary) == [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    assert summary["sex_auroc_mean"] == pytest.approx(first["value"].mean())
    assert summary["sex_auroc_std"] == pytest.approx(first["value"].std(ddof=1))


def test_downstream_folds_without_labels_is_empty() -> None:
    x = np.random.default_rng(8).standard_normal((20, 3))
    cfg = DownstreamConfig(folds=5)
    for subjects in (
        pd.DataFrame({"subject_id": range(20)}),
        pd.DataFrame({"sex": np.full(20, np.nan), "laterality": np.r_[np.arange(9.0), np.full(11, np.nan)]}),
        pd.DataFrame({"sex": np.ones(20)}),  # one sex only: no classifier
    ):
        folds = downstream_folds(x, subjects, cfg, WHERE)
        assert folds.empty and list(folds.columns) == ["repeat", "fold", "metric", "value"]
        assert fold_summary(folds) == {}


def test_a_nan_fold_is_an_error_naming_the_grid_point() -> None:
    """Planted: 16 of 20 subjects have laterality exactly 0, so some held-out folds hold only zeros and
    Spearman is undefined (NaN) there. The old code averaged the NaN folds away (mean over the 6 finite
    folds of 10); now it is a DataError naming the grid point, repeat, fold and metric."""
    n = 20
    lat = np.zeros(n)
    lat[:4] = [0.5, -0.5, 0.4, -0.4]
    subjects = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "laterality": lat})
    x = np.random.default_rng(0).standard_normal((n, 3))
    cfg = DownstreamConfig(folds=5, repeats=2, seed=0)
    with pytest.raises(
        DataError, match=rf"^{WHERE}: .*laterality_spearman is nan in repeat 0, fold 1 \(4 of 10"
    ):
        downstream_folds(x, subjects, cfg, WHERE)


def test_collapsed_representation_scores_no_skill() -> None:
    """Every feature constant (a collapsed latent): AUROC 0.5, Spearman 0 (constant predictions rank no
    one), R² ≤ 0 — recorded as no skill, not NaN."""
    n = 40
    x = np.full((n, 3), 0.7)
    subjects = pd.DataFrame(
        {"sex": np.repeat([0.0, 1.0], n // 2), "laterality": np.random.default_rng(9).standard_normal(n)}
    )
    s = fold_summary(downstream_folds(x, subjects, DownstreamConfig(folds=4, repeats=1), WHERE))
    assert s["sex_auroc_mean"] == pytest.approx(0.5)
    assert s["laterality_spearman_mean"] == 0.0
    assert s["laterality_r2_mean"] <= 0.0


def test_non_finite_representation_is_an_error() -> None:
    x = np.random.default_rng(10).standard_normal((20, 2))
    x[3, 1] = np.inf
    subjects = pd.DataFrame({"sex": np.repeat([0.0, 1.0], 10)})
    with pytest.raises(DataError, match=rf"^{WHERE}: .*non-finite values in 1 subject\(s\) \(rows \[3\]\)"):
        downstream_folds(x, subjects, DownstreamConfig(folds=2, repeats=1), WHERE)
    with pytest.raises(DataError, match="19 representation rows for 20 subjects"):
        downstream_folds(x[:19], subjects, DownstreamConfig(folds=2, repeats=1), WHERE)


# --- fold_summary ------------------------------------------------------------------------------------


def test_fold_summary() -> None:
    folds = pd.DataFrame(
        {
            "repeat": [0, 0, 1, 0, 0, 1],
            "fold": [0, 1, 0, 0, 1, 0],
            "metric": ["sex_auroc"] * 3 + ["laterality_r2"] * 3,
            "value": [0.6, 0.8, 0.7, 0.1, 0.2, 0.6],
        }
    )
    out = fold_summary(folds)
    assert list(out) == ["sex_auroc_mean", "sex_auroc_std", "laterality_r2_mean", "laterality_r2_std"]
    assert out == pytest.approx(
        {
            "sex_auroc_mean": 0.7,
            "sex_auroc_std": 0.1,
            "laterality_r2_mean": 0.3,
            "laterality_r2_std": np.std([0.1, 0.2, 0.6], ddof=1),
        }
    )
    assert np.isnan(fold_summary(folds.iloc[:1])["sex_auroc_std"])


def test_fold_summary_refuses_a_nan_fold() -> None:
    """pivot_table's mean skipped NaN folds silently; fold_summary names the first one instead."""
    folds = pd.DataFrame(
        {
            "repeat": [0, 0, 1],
            "fold": [0, 1, 0],
            "metric": ["laterality_spearman"] * 3,
            "value": [0.3, np.nan, 0.5],
        }
    )
    with pytest.raises(DataError, match=r"laterality_spearman is nan in repeat 0, fold 1 \(1 non-finite"):
        fold_summary(folds)
