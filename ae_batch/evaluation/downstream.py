"""Downstream probes on representations: cross-validated sex AUROC, laterality regression.

The same machinery serves latents and baselines: a standardised linear model refitted inside every fold
(the scaler never sees the fold's held-out subjects), repeated stratified k-fold with fixed seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ae_batch.errors import DataError


def cv_auroc(
    x: np.ndarray, y: np.ndarray, folds: int = 5, repeats: int = 3, seed: int = 0, C: float = 1.0
) -> pd.DataFrame:
    """Per-fold AUROCs of a standardised logistic regression: columns repeat, fold, sex_auroc."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < folds:
        raise DataError(
            f"the downstream sex classifier needs at least downstream.folds={folds} subjects of each sex "
            f"among the evaluated subjects; found {counts.tolist()} (female, male)"
        )
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    rows = []
    for i, (train, test) in enumerate(cv.split(x, y)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        clf.fit(x[train], y[train])
        score = clf.decision_function(x[test])
        rows.append({"repeat": i // folds, "fold": i % folds, "sex_auroc": roc_auc_score(y[test], score)})
    return pd.DataFrame(rows)


def cv_regression(
    x: np.ndarray, y: np.ndarray, folds: int = 5, repeats: int = 3, seed: int = 0, alpha: float = 1.0
) -> pd.DataFrame:
    """Per-fold ridge regression scores (MAE, R², Spearman) of a continuous target such as laterality."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 * folds:
        raise DataError(
            f"laterality regression needs at least {2 * folds} subjects with a label, found {len(y)}"
        )
    cv = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    rows = []
    for i, (train, test) in enumerate(cv.split(x)):
        reg = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        reg.fit(x[train], y[train])
        pred = reg.predict(x[test])
        rho = spearmanr(pred, y[test]).statistic if np.ptp(pred) > 0 else np.nan
        rows.append(
            {
                "repeat": i // folds,
                "fold": i % folds,
                "laterality_mae": mean_absolute_error(y[test], pred),
                "laterality_r2": r2_score(y[test], pred),
                "laterality_spearman": rho,
            }
        )
    return pd.DataFrame(rows)


def summarise_folds(folds: pd.DataFrame) -> dict[str, float]:
    """``<metric>_mean`` and ``<metric>_std`` over all folds and repeats."""
    out: dict[str, float] = {}
    for col in folds.columns:
        if col in ("repeat", "fold"):
            continue
        out[f"{col}_mean"] = float(folds[col].mean())
        out[f"{col}_std"] = float(folds[col].std(ddof=1)) if len(folds) > 1 else float("nan")
    return out
