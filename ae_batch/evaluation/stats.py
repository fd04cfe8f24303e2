"""Does batch size change a metric? Friedman across batch sizes, Wilcoxon vs the smallest, Spearman trend.

All inference is seed-level: one block per seed (the runs of one seed share the initial weights and the
data split, so batch size is the only difference inside a block), analysed separately per group
(default dataset × protocol). Per-fold downstream scores are never used as blocks: the folds of one seed
share one trained model. A p-value that the design cannot make small (too few seeds) is left NaN and
``note`` says why; effect sizes and mean differences are always reported. Non-finite metric values
count as missing.
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
GROUP_COLS = ("dataset", "protocol")
OPTIONAL_GROUP_COLS = ("protocol",)  # absent in tables written before protocols existed
TESTS = ("friedman", "wilcoxon", "spearman_trend")
COLUMNS = [
    "dataset", "protocol", "metric", "test", "batch_size", "reference_batch_size", "n_batch_sizes",
    "n_blocks", "n_obs", "statistic", "p_value", "p_holm", "method", "effect_size", "effect_size_name",
    "ci_low", "ci_high", "mean_reference", "mean_compared", "mean_diff", "direction", "note",
]  # fmt: skip


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


def min_wilcoxon_pairs(alpha: float = ALPHA) -> int:
    """Fewest pairs whose exact two-sided Wilcoxon p (smallest: 2 / 2**n) can fall below ``alpha``."""
    n = 1
    while 2.0 / 2**n >= alpha:
        n += 1
    return n


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


def friedman_test(x: np.ndarray, rng: np.random.Generator, alpha: float = ALPHA) -> dict[str, Any]:
    """Friedman test on complete blocks (rows) × batch sizes (columns) with Kendall's W as effect size.

    ``p_value`` is absent when it cannot fall below ``alpha`` for this many blocks and batch sizes.
    """
    n, k = x.shape
    out: dict[str, Any] = {"n_blocks": n, "n_obs": n * k, "effect_size_name": "kendall_w"}
    if k < 2 or n < 2:
        return out | {"note": f"{n} complete block(s), {k} batch size(s): Friedman needs ≥2 of each"}
    q, w = friedman_statistic(x)
    out |= {"statistic": q, "effect_size": w}
    if np.isnan(w):
        return out | {"p_value": 1.0, "method": "all tied", "note": "all values tied within every block"}
    log_min_p = -(n - 1) * math.lgamma(k + 1)  # smallest attainable permutation p, untied data
    if log_min_p >= math.log(alpha):
        min_p = math.exp(log_min_p)
        note = f"{n} blocks × {k} batch sizes: smallest attainable p is {min_p:.3g}, cannot reach p<{alpha}"
        return out | {"note": note}
    if n <= FRIEDMAN_PERMUTATION_MAX_BLOCKS:
        p, method = _friedman_permutation_p(sps.rankdata(x, axis=1), rng)
    else:
        p, method = float(sps.chi2.sf(q, k - 1)), "chi-square approximation"
    return out | {"p_value": p, "method": method}


def wilcoxon_test(d: np.ndarray, alpha: float = ALPHA) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank on paired differences d = x_B - x_ref, with rank-biserial r."""
    d = np.asarray(d, dtype=float)
    n, nz = d.size, d[d != 0]
    need = min_wilcoxon_pairs(alpha)
    out: dict[str, Any] = {"n_blocks": n, "n_obs": 2 * n, "effect_size_name": "rank_biserial"}
    out["effect_size"] = rank_biserial(d) if n else float("nan")
    if n < need:
        return out | {"note": f"only {n} paired blocks: Wilcoxon cannot reach p<{alpha} (needs ≥{need})"}
    if nz.size == 0:
        return out | {"statistic": 0.0, "p_value": 1.0, "method": "all tied", "note": "all differences zero"}
    if nz.size < need:
        note = f"only {nz.size} non-zero differences of {n}: Wilcoxon cannot reach p<{alpha}"
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


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho (average ranks for ties); NaN when either variable is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
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


def _within_block_permutation_p(
    x: np.ndarray, y: np.ndarray, codes: np.ndarray, rng: np.random.Generator
) -> float:
    """Two-sided Monte Carlo p of the pooled Spearman rho, permuting x only within each block."""
    order0 = np.argsort(codes, kind="stable")
    c = codes[order0]
    rx, ry = sps.rankdata(x[order0]), sps.rankdata(y[order0])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    obs = abs(float(rx @ ry)) / den
    hits = 0
    for start in range(0, N_PERMUTATIONS, 1000):
        b = min(1000, N_PERMUTATIONS - start)
        perm = (c + rng.random((b, c.size))).argsort(axis=1)  # blocks keep their positions
        hits += int(np.sum(np.abs(rx[perm] @ ry) / den >= obs - 1e-9))
    return (hits + 1) / (N_PERMUTATIONS + 1)


def spearman_trend(
    long: pd.DataFrame, n_bootstrap: int, rng: np.random.Generator, unit: str = "seed"
) -> dict[str, Any]:
    """Spearman rho of value vs log2(batch size) over all runs.

    The p-value comes from permuting batch sizes within each ``unit`` (seed), so it respects the seed
    blocks; the 95% CI is a percentile bootstrap resampling whole ``unit`` groups.
    """
    x, y = np.log2(long["batch_size"].to_numpy(float)), long["value"].to_numpy(float)
    out: dict[str, Any] = {"n_obs": len(long), "effect_size_name": "spearman_rho"}
    rho = spearman(x, y)
    if np.isnan(rho):
        return out | {"note": "constant batch size or metric: rho undefined"}
    codes, uniq = pd.factorize(long[unit])
    p = _within_block_permutation_p(x, y, codes, rng)
    out |= {"statistic": rho, "effect_size": rho, "p_value": p}
    out["method"] = f"within-{unit} permutation ({N_PERMUTATIONS})"
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


def _join(*notes: str) -> str:
    return "; ".join(s for s in notes if s)


def _analyse(long: pd.DataFrame, n_bootstrap: int, seed: int) -> list[dict]:
    """All rows for one group × metric; ``long`` has seed, batch_size and a finite ``value``."""
    wide = long.set_index(["seed", "batch_size"])["value"].unstack("batch_size").sort_index(axis=1)
    sizes = [int(b) for b in wide.columns]
    ref = sizes[0]
    base = {"reference_batch_size": ref, "n_batch_sizes": len(sizes)}
    rng = np.random.default_rng(seed)
    complete = wide.dropna()
    fried = base | {"test": "friedman"} | friedman_test(complete.to_numpy(float), rng)
    if len(complete) < len(wide):
        fried["note"] = _join(
            fried.get("note", ""), f"{len(wide) - len(complete)} incomplete block(s) dropped"
        )
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


def require_columns(df: pd.DataFrame, cols: Sequence[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{name} lacks column(s) {missing}; it has {list(df.columns)}")


def resolve_group_cols(df: pd.DataFrame, group_cols: Sequence[str]) -> list[str]:
    """The grouping columns present in ``df``; ``protocol`` may be absent (older tables), others not."""
    cols = list(dict.fromkeys(group_cols))
    require_columns(df, [c for c in cols if c not in OPTIONAL_GROUP_COLS], "summary")
    return [c for c in cols if c in df.columns]


def output_group_cols(group_cols: Sequence[str]) -> list[str]:
    """Leading columns of an output table: dataset, protocol, then any other grouping column."""
    return list(dict.fromkeys(["dataset", "protocol", *group_cols]))


def prepare_summary(summary: pd.DataFrame, group_cols: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Check columns, integer seed and batch size (≥ 1) and one row per (group, batch_size, seed)."""
    require_columns(summary, ["batch_size", "seed", *metrics], "summary")
    df = summary.copy()
    for c in ("batch_size", "seed"):
        try:
            df[c] = pd.to_numeric(df[c], errors="raise").astype(int)
        except (ValueError, TypeError) as e:
            raise DataError(f"summary: column {c!r} must hold integers ({e})") from e
    if (df["batch_size"] < 1).any():
        raise DataError("summary: batch_size must be ≥ 1")
    key = [*group_cols, "batch_size", "seed"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        rows = df.loc[dup, key].head(4).to_dict("records")
        raise DataError(
            f"summary: {int(dup.sum())} duplicated {key} rows, e.g. {rows}; statistics need one row per "
            "seed and batch size (for a tuned protocol keep only the selected learning rate)"
        )
    return df


def group_items(df: pd.DataFrame, group_cols: Sequence[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """(group values, rows) per group, sorted; missing group values (NaN) become ""."""
    if not group_cols:
        return [({}, df)]
    out = []
    for key, g in df.groupby(list(group_cols), sort=True, dropna=False):
        vals = key if isinstance(key, tuple) else (key,)
        out.append(({c: "" if pd.isna(v) else str(v) for c, v in zip(group_cols, vals, strict=True)}, g))
    return out


def finite_values(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").replace([np.inf, -np.inf], np.nan)


def compute_stats(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    group_cols: Sequence[str] = GROUP_COLS,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Friedman, Wilcoxon-vs-smallest (Holm) and Spearman-trend rows per group × metric (tidy table).

    ``summary`` holds one row per (group columns, batch_size, seed); blocks are seeds. ``group_cols``
    defaults to dataset × protocol (``protocol`` is optional: without it groups are datasets and the
    output's ``protocol`` column is empty). A group × metric without finite values yields one
    ``test="none"`` row.
    """
    groups = resolve_group_cols(summary, group_cols)
    summary = prepare_summary(summary, groups, metrics)
    lead = output_group_cols(groups)
    rows: list[dict] = []
    i = 0
    for key, g in group_items(summary, groups):
        ident = {c: key.get(c, "") for c in lead}
        for m in metrics:
            long = g[["seed", "batch_size"]].assign(value=finite_values(g[m])).dropna(subset=["value"])
            if long.empty:
                rows.append(ident | {"metric": m, "test": "none", "note": "not applicable: no finite values"})
            else:
                rows += [ident | {"metric": m} | r for r in _analyse(long, n_bootstrap, seed + i)]
            i += 1
    out = pd.DataFrame(rows).reindex(columns=list(dict.fromkeys([*lead, *COLUMNS])))
    for c in ("batch_size", "reference_batch_size", "n_batch_sizes", "n_blocks", "n_obs"):
        out[c] = out[c].astype("Int64")
    for c in (*lead, "method", "effect_size_name", "direction", "note"):
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
    head = ["dataset", "protocol", "metric", "test", "B vs ref", "n", "p", "p_holm", "effect", "95% CI"]
    head += ["Δmean", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in stats.to_dict("records"):
        vs = (
            f"{_fmt(r['batch_size'])} vs {_fmt(r['reference_batch_size'])}" if r["test"] == "wilcoxon" else ""
        )
        eff = f"{r['effect_size_name']}={_fmt(r['effect_size'])}" if r["effect_size_name"] else ""
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if not pd.isna(r["ci_low"]) else ""
        cells = [r["dataset"], r.get("protocol", ""), r["metric"], r["test"], vs, _fmt(r["n_blocks"])]
        cells += [_fmt(r["p_value"], True), _fmt(r["p_holm"], True), eff, ci, _fmt(r["mean_diff"])]
        cells += [str(r["note"]).replace("|", "/")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
