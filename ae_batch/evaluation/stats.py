"""Does batch size change a metric? Friedman across batch sizes, Wilcoxon vs the smallest, Spearman trend.

Blocks are seeds for the per-run summary metrics and (seed, repeat, fold) for per-fold downstream scores.
A p-value that the design cannot make small (too few blocks) is left NaN and ``note`` says why; effect
sizes and mean differences are always reported. Non-finite metric values count as missing.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ae_batch.errors import DataError

ALPHA = 0.05
MIN_WILCOXON_PAIRS = 6  # exact two-sided minimum p = 2 / 2**n: n = 5 gives 0.0625
FRIEDMAN_PERMUTATION_MAX_BLOCKS = 20  # up to this many blocks: permutation p; beyond: chi-square
FRIEDMAN_EXACT_MAX_ARRANGEMENTS = 200_000
N_PERMUTATIONS = 10_000
TESTS = ("friedman", "wilcoxon", "spearman_trend")
COLUMNS = [
    "dataset", "metric", "test", "batch_size", "reference_batch_size", "n_batch_sizes", "n_blocks",
    "n_obs", "statistic", "p_value", "p_holm", "method", "effect_size", "effect_size_name", "ci_low",
    "ci_high", "mean_reference", "mean_compared", "mean_diff", "direction", "note",
]  # fmt: skip
FOLD_NOTE = "fold blocks share one trained model per seed: p treats them as independent (anti-conservative)"


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and do not count towards m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (T+ - T-)/(T+ + T-), zeros dropped; 0 if all zero."""
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    r = sps.rankdata(np.abs(d))
    return float((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def friedman_statistic(x: np.ndarray) -> tuple[float, float]:
    """Tie-corrected Friedman chi-square Q and Kendall's W = Q / (n (k-1)) for an (n blocks, k) array."""
    n, k = x.shape
    ranks = sps.rankdata(x, axis=1)
    denom = (ranks**2).sum() - n * k * (k + 1) ** 2 / 4
    if denom <= 1e-12:
        return 0.0, float("nan")
    q = (k - 1) * ((ranks.sum(axis=0) - n * (k + 1) / 2) ** 2).sum() / denom
    return float(q), float(q / (n * (k - 1)))


def _friedman_permutation_p(ranks: np.ndarray, rng: np.random.Generator) -> tuple[float, str]:
    """P(sum R_j^2 >= observed) under within-block permutation; exact when the arrangements are few."""
    n, k = ranks.shape
    s_obs = float((ranks.sum(axis=0) ** 2).sum())
    tol = 1e-9 * max(s_obs, 1.0)
    n_arr = math.factorial(k) ** (n - 1)  # block 0 fixed: relabelling all blocks leaves S unchanged
    if n_arr <= FRIEDMAN_EXACT_MAX_ARRANGEMENTS:
        perms = np.array(list(itertools.permutations(range(k))))
        sums = ranks[:1]
        for row in ranks[1:]:
            sums = (sums[:, None, :] + row[perms][None, :, :]).reshape(-1, k)
        return float(np.mean((sums**2).sum(axis=1) >= s_obs - tol)), f"exact permutation ({n_arr})"
    order = rng.random((N_PERMUTATIONS, n, k)).argsort(axis=2)
    perm = np.take_along_axis(np.broadcast_to(ranks, order.shape), order, axis=2)
    hits = int(np.sum((perm.sum(axis=1) ** 2).sum(axis=1) >= s_obs - tol))
    return (hits + 1) / (N_PERMUTATIONS + 1), f"Monte Carlo permutation ({N_PERMUTATIONS})"


def friedman_test(x: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Friedman test on complete blocks (rows) × batch sizes (columns) with Kendall's W as effect size."""
    n, k = x.shape
    out: dict[str, Any] = {"n_blocks": n, "n_obs": n * k, "effect_size_name": "kendall_w"}
    if k < 2 or n < 2:
        return out | {"note": f"{n} complete block(s), {k} batch size(s): Friedman needs ≥2 of each"}
    q, w = friedman_statistic(x)
    out |= {"statistic": q, "effect_size": w}
    if np.isnan(w):
        return out | {"p_value": 1.0, "method": "all tied", "note": "all values tied within every block"}
    log_min_p = -(n - 1) * math.lgamma(k + 1)  # smallest attainable permutation p, untied data
    if log_min_p >= math.log(ALPHA):
        min_p = math.exp(log_min_p)
        note = f"{n} blocks × {k} batch sizes: smallest attainable p is {min_p:.3g}, cannot reach p<{ALPHA}"
        return out | {"note": note}
    if n <= FRIEDMAN_PERMUTATION_MAX_BLOCKS:
        p, method = _friedman_permutation_p(sps.rankdata(x, axis=1), rng)
    else:
        p, method = float(sps.chi2.sf(q, k - 1)), "chi-square approximation"
    return out | {"p_value": p, "method": method}


def wilcoxon_test(d: np.ndarray) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank on paired differences d = x_B - x_ref, with rank-biserial r."""
    d = np.asarray(d, dtype=float)
    n, nz = d.size, d[d != 0]
    out: dict[str, Any] = {"n_blocks": n, "n_obs": 2 * n, "effect_size_name": "rank_biserial"}
    out["effect_size"] = rank_biserial(d) if n else float("nan")
    if n < MIN_WILCOXON_PAIRS:
        need = f"needs ≥{MIN_WILCOXON_PAIRS}"
        return out | {"note": f"only {n} paired blocks: Wilcoxon cannot reach p<{ALPHA} ({need})"}
    if nz.size == 0:
        return out | {"statistic": 0.0, "p_value": 1.0, "method": "all tied", "note": "all differences zero"}
    if nz.size < MIN_WILCOXON_PAIRS:
        note = f"only {nz.size} non-zero differences of {n}: Wilcoxon cannot reach p<{ALPHA}"
        return out | {"note": note}
    ties_or_zeros = nz.size < n or np.unique(np.abs(nz)).size < nz.size
    if n <= 50 and not ties_or_zeros:
        method = "exact"
    elif n <= 13:
        method = "exact permutation (ties/zeros)"
    else:
        method = "normal approximation"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.wilcoxon(d, zero_method="wilcox", method="auto")
    return out | {"statistic": float(res.statistic), "p_value": float(res.pvalue), "method": method}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(sps.rankdata(x), sps.rankdata(y))[0, 1])


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rho of (B, m) arrays; NaN entries are padding and ignored; constant rows → NaN."""
    rx = sps.rankdata(x, axis=1, nan_policy="omit")
    ry = sps.rankdata(y, axis=1, nan_policy="omit")
    rx -= np.nanmean(rx, axis=1, keepdims=True)
    ry -= np.nanmean(ry, axis=1, keepdims=True)
    num, den = np.nansum(rx * ry, axis=1), np.sqrt(np.nansum(rx**2, axis=1) * np.nansum(ry**2, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _bootstrap_rho(
    x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """Spearman rho over ``n_bootstrap`` resamples of the groups in ``codes`` (cluster bootstrap)."""
    n_groups = int(codes.max()) + 1
    sizes = np.bincount(codes, minlength=n_groups)
    pad = np.full((n_groups, sizes.max()), x.size)  # index x.size points at a NaN pad value
    for g in range(n_groups):
        pad[g, : sizes[g]] = np.flatnonzero(codes == g)
    xp, yp = np.append(x, np.nan), np.append(y, np.nan)
    out = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, 500):
        b = min(500, n_bootstrap - start)
        idx = pad[rng.integers(0, n_groups, (b, n_groups))].reshape(b, -1)
        out[start : start + b] = _spearman_rows(xp[idx], yp[idx])
    return out


def spearman_trend(
    long: pd.DataFrame, n_bootstrap: int, rng: np.random.Generator, unit: str = "seed"
) -> dict[str, Any]:
    """Spearman rho of value vs log2(batch size); percentile bootstrap CI resampling ``unit`` groups."""
    x, y = np.log2(long["batch_size"].to_numpy(float)), long["value"].to_numpy(float)
    out: dict[str, Any] = {
        "n_obs": len(long),
        "effect_size_name": "spearman_rho",
        "method": "t approximation",
    }
    rho = _spearman(x, y)
    if np.isnan(rho):
        return out | {"note": "constant batch size or metric: rho undefined"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(sps.spearmanr(x, y).pvalue)
    out |= {"statistic": rho, "effect_size": rho, "p_value": p}
    codes, uniq = pd.factorize(long[unit])
    boot = _bootstrap_rho(x, y, codes, n_bootstrap, rng)
    notes = []
    if len(uniq) < 5:
        notes.append(f"only {len(uniq)} {unit}s to resample: bootstrap CI is crude")
    ok = boot[~np.isnan(boot)]
    if n_bootstrap and ok.size >= 0.5 * n_bootstrap:
        out |= {"ci_low": float(np.quantile(ok, 0.025)), "ci_high": float(np.quantile(ok, 0.975))}
    else:
        notes.append("too few valid bootstrap resamples for a CI")
    out["method"] += f"; percentile bootstrap over {unit}s ({n_bootstrap})"
    return out | {"note": "; ".join(notes)}


def _direction(v: float) -> str:
    return "" if np.isnan(v) else "increase" if v > 0 else "decrease" if v < 0 else "none"


def _analyse(long: pd.DataFrame, block_cols: list[str], n_bootstrap: int, seed: int) -> list[dict]:
    """All rows for one dataset × metric; ``long`` has block_cols, batch_size and a finite ``value``."""
    wide = long.set_index([*block_cols, "batch_size"])["value"].unstack("batch_size").sort_index(axis=1)
    sizes = [int(b) for b in wide.columns]
    ref = sizes[0]
    base = {"reference_batch_size": ref, "n_batch_sizes": len(sizes)}
    rng = np.random.default_rng(seed)
    complete = wide.dropna()
    fried = base | {"test": "friedman"} | friedman_test(complete.to_numpy(float), rng)
    if len(complete) < len(wide):
        dropped = f"{len(wide) - len(complete)} incomplete block(s) dropped"
        fried["note"] = "; ".join(s for s in (fried.get("note", ""), dropped) if s)
    rows = [fried]
    pair_rows = []
    for b in sizes[1:]:
        pairs = wide[[ref, b]].dropna()
        d = (pairs[b] - pairs[ref]).to_numpy(float)
        row = base | {"test": "wilcoxon", "batch_size": b} | wilcoxon_test(d)
        m_ref, m_b = (pairs[ref].mean(), pairs[b].mean()) if len(pairs) else (np.nan, np.nan)
        row |= {"mean_reference": m_ref, "mean_compared": m_b, "mean_diff": m_b - m_ref}
        row["direction"] = _direction(row["mean_diff"])
        pair_rows.append(row)
    for row, p in zip(pair_rows, holm([r.get("p_value", np.nan) for r in pair_rows]), strict=True):
        row["p_holm"] = p
    rows += pair_rows
    trend = base | {"test": "spearman_trend"} | spearman_trend(long, n_bootstrap, rng)
    trend["n_blocks"] = len(wide)
    trend["direction"] = _direction(trend.get("effect_size", np.nan))
    return rows + [trend]


def _require(df: pd.DataFrame, cols: Sequence[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{name} lacks column(s) {missing}; it has {list(df.columns)}")


def _prepare(df: pd.DataFrame, key: list[str], name: str) -> pd.DataFrame:
    """Check types and uniqueness; batch sizes must be positive integers."""
    df = df.copy()
    for c in [k for k in key if k not in ("dataset", "metric")]:
        try:
            df[c] = pd.to_numeric(df[c], errors="raise").astype(int)
        except (ValueError, TypeError) as e:
            raise DataError(f"{name}: column {c!r} must hold integers ({e})") from e
    if (df["batch_size"] < 1).any():
        raise DataError(f"{name}: batch_size must be ≥ 1")
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise DataError(f"{name}: duplicated {key} rows, e.g. {df.loc[dup, key].head(2).to_dict('records')}")
    return df


def _not_applicable(dataset: str, metric: str) -> dict:
    return {"dataset": dataset, "metric": metric, "test": "none", "note": "not applicable: no finite values"}


def compute_stats(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    folds: pd.DataFrame | None = None,
    fold_metrics: Sequence[str] = ("sex_auroc",),
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Friedman, Wilcoxon-vs-smallest (Holm) and Spearman-trend rows per dataset × metric (tidy table).

    Summary metrics use seeds as blocks; fold metrics (from ``folds``, named ``<metric>_folds``) use
    (seed, repeat, fold). A dataset × metric without finite values yields one ``test="none"`` row.
    """
    _require(summary, ["dataset", "batch_size", "seed", *metrics], "summary")
    summary = _prepare(summary, ["dataset", "batch_size", "seed"], "summary")
    jobs: list[tuple[str, str, pd.DataFrame, list[str]]] = []
    for ds, g in summary.groupby("dataset", sort=True):
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce").replace([np.inf, -np.inf], np.nan)
            jobs.append((str(ds), m, g[["seed", "batch_size"]].assign(value=v), ["seed"]))
    if folds is not None:
        fkey = ["dataset", "metric", "batch_size", "seed", "repeat", "fold"]
        _require(folds, [*fkey, "value"], "folds")
        folds = _prepare(folds[folds["metric"].isin(list(fold_metrics))], fkey, "folds")
        for ds in sorted(set(summary["dataset"].astype(str)) | set(folds["dataset"].astype(str))):
            for m in fold_metrics:
                g = folds[(folds["dataset"].astype(str) == ds) & (folds["metric"] == m)]
                v = pd.to_numeric(g["value"], errors="coerce").replace([np.inf, -np.inf], np.nan)
                jobs.append((ds, f"{m}_folds", g[fkey[2:]].assign(value=v), ["seed", "repeat", "fold"]))
    rows: list[dict] = []
    for i, (ds, metric, long, blocks) in enumerate(jobs):
        long = long.dropna(subset=["value"])
        if long.empty:
            rows.append(_not_applicable(ds, metric))
            continue
        for r in _analyse(long, blocks, n_bootstrap, seed + i):
            if len(blocks) > 1:
                r["note"] = "; ".join(s for s in (r.get("note", ""), FOLD_NOTE) if s)
            rows.append({"dataset": ds, "metric": metric} | r)
    out = pd.DataFrame(rows).reindex(columns=COLUMNS)
    out = out.sort_values("dataset", kind="stable", ignore_index=True)
    for c in ("batch_size", "reference_batch_size", "n_batch_sizes", "n_blocks", "n_obs"):
        out[c] = out[c].astype("Int64")
    for c in ("method", "effect_size_name", "direction", "note"):
        out[c] = out[c].fillna("").astype(object)
    return out


def _fmt(v: Any, p: bool = False) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if p:
        return "<0.001" if v < 0.001 else f"{v:.3f}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def format_stats_markdown(stats: pd.DataFrame) -> str:
    """Compact markdown table: one line per test row with p, Holm p, effect size, CI and note."""
    head = ["dataset", "metric", "test", "B vs ref", "n", "p", "p_holm", "effect", "95% CI", "Δmean", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in stats.itertuples(index=False):
        vs = f"{_fmt(r.batch_size)} vs {_fmt(r.reference_batch_size)}" if r.test == "wilcoxon" else ""
        eff = f"{r.effect_size_name}={_fmt(r.effect_size)}" if r.effect_size_name else ""
        ci = f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not pd.isna(r.ci_low) else ""
        cells = [r.dataset, r.metric, r.test, vs, _fmt(r.n_blocks), _fmt(r.p_value, True)]
        cells += [_fmt(r.p_holm, True), eff, ci, _fmt(r.mean_diff), r.note.replace("|", "/")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
