"""Downstream probes on representations: cross-validated sex AUROC, laterality regression.

The same machinery serves latents and baselines: a ``Pipeline(StandardScaler, linear model)`` run by
scikit-learn's ``cross_validate``, so the scaler is refitted inside every fold on the fold's training
subjects only and never sees its held-out subjects. Splits are repeated k-fold with fixed seeds:

- sex: ``RepeatedStratifiedKFold`` (stratified on sex) + L2 logistic regression, scored by AUROC of the
  decision function;
- laterality: ``RepeatedKFold``, repeated k-fold, **not stratified**: laterality is continuous. Ridge
  regression, scored by MAE, R² and Spearman's rho.

Every fold's score must be finite: a NaN (e.g. a held-out fold whose labels are all equal, so Spearman is
undefined) is a :class:`DataError` naming the grid point, repeat, fold and metric, never averaged away.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning, spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import make_scorer, mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ae_batch.config import DownstreamConfig
from ae_batch.errors import DataError

FOLD_COLUMNS = ["repeat", "fold", "metric", "value"]
SEX_METRICS = ("sex_auroc",)
LATERALITY_METRICS = ("laterality_mae", "laterality_r2", "laterality_spearman")
RIDGE_ALPHA = 1.0


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rho; 0 for constant predictions (a predictor that ranks no one has no rank skill).

    Constant predictions come from a collapsed representation (every feature constant in the training
    fold); scoring them 0, like AUROC 0.5 and R² ≤ 0 for the same representation, records "no skill"
    instead of failing the grid point. Constant *labels* in a held-out fold still give NaN (an error).
    """
    if np.ptp(y_pred) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # NaN is reported as a DataError instead
        return float(spearmanr(y_pred, y_true).statistic)


def _as_matrix(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(len(x), -1)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"{_at(where)}the representation given to the downstream probes has non-finite values in "
            f"{rows.size} subject(s) (rows {rows[:5].tolist()})"
        )
    return x


def _cross_validated(
    model: object,
    x: np.ndarray,
    y: np.ndarray,
    cv: RepeatedKFold | RepeatedStratifiedKFold,
    folds: int,
    scorers: dict[str, Callable[..., float]],
    where: str,
) -> pd.DataFrame:
    """Wide per-fold table (repeat, fold, *metrics) of ``Pipeline(StandardScaler, model)``; finite only."""
    result = cross_validate(
        Pipeline([("scale", StandardScaler()), ("model", model)]),
        x,
        y,
        cv=cv,
        scoring=scorers,
        error_score="raise",  # the default puts NaN in place of a failed fit, silently
    )
    n = len(result[f"test_{next(iter(scorers))}"])
    table = pd.DataFrame({"repeat": np.arange(n) // folds, "fold": np.arange(n) % folds})
    for metric in scorers:
        table[metric] = np.asarray(result[f"test_{metric}"], dtype=np.float64)
    for metric in scorers:
        bad = table.loc[~np.isfinite(table[metric])]
        if not bad.empty:
            first = bad.iloc[0]
            raise DataError(
                f"{_at(where)}downstream metric {metric} is {first[metric]} in repeat {int(first['repeat'])}, "
                f"fold {int(first['fold'])} ({len(bad)} of {n} folds non-finite); e.g. the held-out "
                f"subjects' labels are all equal. Use fewer downstream.folds or more test subjects"
            )
    return table


def cv_auroc(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    C: float = 1.0,
    where: str = "",
) -> pd.DataFrame:
    """Per-fold AUROCs of a standardised logistic regression: columns repeat, fold, sex_auroc.

    Labels are 0/1 (female/male); splits are ``RepeatedStratifiedKFold(folds, repeats, seed)``.
    """
    x = _as_matrix(x, where)
    y = np.asarray(y, dtype=np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError(f"{_at(where)}sex labels must be coded 0/1, got values {np.unique(y)[:5].tolist()}")
    y = y.astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < folds:
        raise DataError(
            f"{_at(where)}the downstream sex classifier needs at least downstream.folds={folds} subjects "
            f"of each sex (coded 0/1) among the evaluated subjects; found {counts.tolist()} (female, male)"
        )
    return _cross_validated(
        LogisticRegression(C=C, max_iter=2000),
        x,
        y,
        RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed),
        folds,
        {"sex_auroc": make_scorer(roc_auc_score, response_method="decision_function")},
        where,
    )


def cv_regression(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    alpha: float = RIDGE_ALPHA,
    where: str = "",
) -> pd.DataFrame:
    """Per-fold ridge regression scores (MAE, R², Spearman) of a continuous target such as laterality.

    Splits are ``RepeatedKFold(folds, repeats, seed)``: repeated k-fold, not stratified (the target is
    continuous).
    """
    x = _as_matrix(x, where)
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 * folds:
        raise DataError(
            f"{_at(where)}laterality regression needs at least {2 * folds} subjects with a label, "
            f"found {len(y)}"
        )
    return _cross_validated(
        Ridge(alpha=alpha),
        x,
        y,
        RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed),
        folds,
        {
            "laterality_mae": make_scorer(mean_absolute_error),
            "laterality_r2": make_scorer(r2_score),
            "laterality_spearman": make_scorer(_spearman),
        },
        where,
    )


def _long(wide: pd.DataFrame) -> pd.DataFrame:
    return wide.melt(id_vars=["repeat", "fold"], var_name="metric", value_name="value")


def downstream_folds(
    representation: np.ndarray, subjects: pd.DataFrame, downstream_cfg: DownstreamConfig, where: str
) -> pd.DataFrame:
    """Long table (repeat, fold, metric, value) of every probe whose labels exist for these subjects.

    ``representation`` is ``[N, ...]`` in the row order of ``subjects`` (flattened to ``[N, d]``). The sex
    probe runs when the evaluated subjects have both sexes (subjects with unknown sex are left out), the
    laterality probe when at least ``2 × folds`` subjects have a laterality. ``where`` names the grid point
    (e.g. ``"ehr/paper/bs16/seed0"``) in errors.
    """
    if len(representation) != len(subjects):
        raise DataError(f"{_at(where)}{len(representation)} representation rows for {len(subjects)} subjects")
    cfg = downstream_cfg
    frames = []
    if "sex" in subjects:
        sex = subjects["sex"].to_numpy(dtype=float)
        known = ~np.isnan(sex)
        if len(np.unique(sex[known])) == 2:
            f = cv_auroc(representation[known], sex[known], cfg.folds, cfg.repeats, cfg.seed, cfg.C, where)
            frames.append(_long(f))
    if "laterality" in subjects:
        lat = subjects["laterality"].to_numpy(dtype=float)
        ok = ~np.isnan(lat)
        if ok.sum() >= 2 * cfg.folds:
            f = cv_regression(representation[ok], lat[ok], cfg.folds, cfg.repeats, cfg.seed, where=where)
            frames.append(_long(f))
    if not frames:
        return pd.DataFrame({"repeat": [], "fold": [], "metric": [], "value": []}).astype(
            {"repeat": int, "fold": int, "metric": object, "value": float}
        )
    return pd.concat(frames, ignore_index=True)


def fold_summary(folds: pd.DataFrame) -> dict[str, float]:
    """``<metric>_mean`` and ``<metric>_std`` (ddof 1; NaN for a single fold) of a long fold table.

    Metrics in order of first appearance. A non-finite value is a :class:`DataError`, never skipped.
    """
    missing = [c for c in FOLD_COLUMNS if c not in folds]
    if missing:
        raise ValueError(f"fold table lacks column(s) {missing}; expected {FOLD_COLUMNS}")
    values = folds["value"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = folds.loc[bad].iloc[0]
        raise DataError(
            f"downstream metric {row['metric']} is {row['value']} in repeat {row['repeat']}, fold "
            f"{row['fold']} ({int(bad.sum())} non-finite value(s) in the fold table)"
        )
    out: dict[str, float] = {}
    for metric, group in folds.groupby("metric", sort=False)["value"]:
        v = group.to_numpy(dtype=np.float64)
        out[f"{metric}_mean"] = float(v.mean())
        out[f"{metric}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return out
