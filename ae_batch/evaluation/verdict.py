"""Verdict table: per dataset × protocol × metric, is a smaller or a larger batch better?

All inference is seed-level: a block is one seed (its runs share the initial weights and the data split),
and only complete blocks count, i.e. seeds with a finite value at every batch size of that dataset ×
protocol × metric (``n_seeds``). Columns:

- ``spearman_rho``: Spearman ρ between log2(batch size) and the metric over all (seed, batch size)
  points, in the metric's own units (descriptive; it does not enter the rule).
- ``friedman_p``: Friedman test across batch sizes blocked by seed (exact or Monte Carlo permutation
  p); empty when this many seeds and batch sizes cannot reach p < alpha (``note`` says so).
- ``holm_p_smallest_vs_largest``: exact two-sided Wilcoxon signed-rank test of every batch size
  against the smallest, Holm-adjusted across those comparisons; the adjusted p of the largest batch
  size. With n seeds and k batch sizes it cannot go below (k−1)·2/2ⁿ (0.156 for 6 seeds and 6 batch
  sizes); ``note`` says when it cannot reach alpha. Reported, but not part of the rule.

Direction rule (seed-level; alpha = 0.05 by default). For each complete seed, compute Spearman's ρ
between batch size and the metric across that seed's batch sizes (ties averaged; a seed whose metric
is constant counts as ρ = 0) and average over seeds: ρ̄ (Page's L trend statistic, rescaled). Let Δ
be the mean over seeds of metric(largest batch size) − metric(smallest batch size). Orient by the
metric's better side, o = +1 when higher is better and o = −1 when lower is better (test_recon_loss).
The verdict is ``larger_better`` when (1) the seed-blocked Friedman test gives p < alpha, (2) o·ρ̄ ≥ 0.5
and (3) o·Δ > 0; ``smaller_better`` when (1), o·ρ̄ ≤ −0.5 and o·Δ < 0; otherwise ``no_evidence``, and
``note`` names each condition that failed. Condition 1 caps the false-positive rate at alpha (a
permutation test within seeds); conditions 2 and 3 refuse a direction for a non-monotone pattern (a
U shape has a significant Friedman test but ρ̄ near 0) or one whose two ends disagree with the trend.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ae_batch.evaluation.stats import (
    ALPHA,
    GROUP_COLS,
    finite_values,
    friedman_test,
    group_items,
    holm,
    output_group_cols,
    prepare_summary,
    resolve_group_cols,
    spearman,
    wilcoxon_test,
)

HIGHER, LOWER = "higher", "lower"
VERDICT_METRICS: dict[str, str] = {
    "test_recon_loss": LOWER,
    "sex_auroc_mean": HIGHER,
    "laterality_r2_mean": HIGHER,
    "latent_effective_rank": HIGHER,
    "codebook_perplexity": HIGHER,
}
MIN_MEAN_WITHIN_SEED_RHO = 0.5
DIRECTIONS = ("smaller_better", "larger_better", "no_evidence")
COLUMNS = [
    "dataset", "protocol", "metric", "direction", "spearman_rho", "friedman_p",
    "holm_p_smallest_vs_largest", "n_seeds", "note",
]  # fmt: skip


def _orientation(metrics: Mapping[str, str] | Sequence[str]) -> dict[str, int]:
    """+1 where higher is better, −1 where lower is better; a bare name must be in VERDICT_METRICS."""
    if not isinstance(metrics, Mapping):
        unknown = [m for m in metrics if m not in VERDICT_METRICS]
        if unknown:
            raise ValueError(f"no orientation known for {unknown}: pass a mapping metric -> 'higher'/'lower'")
        metrics = {m: VERDICT_METRICS[m] for m in metrics}
    bad = {m: o for m, o in metrics.items() if o not in (HIGHER, LOWER)}
    if bad:
        raise ValueError(f"orientation must be {HIGHER!r} or {LOWER!r}, got {bad}")
    return {m: 1 if o == HIGHER else -1 for m, o in metrics.items()}


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _p_is(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3g}"


def _rng(seed: int, key: dict[str, Any], metric: str) -> np.random.Generator:
    """A stream per group × metric that does not depend on which other groups are in the table."""
    ident = "|".join([*(str(v) for v in key.values()), metric])
    return np.random.default_rng([seed, zlib.crc32(ident.encode())])


def verdict_one(long: pd.DataFrame, orientation: int, alpha: float, rng: np.random.Generator) -> dict:
    """Verdict for one group × metric; ``long`` has seed, batch_size and a finite ``value``."""
    wide = long.set_index(["seed", "batch_size"])["value"].unstack("batch_size").sort_index(axis=1)
    complete = wide.dropna()
    sizes = [int(b) for b in wide.columns]
    n, k = complete.shape
    notes: list[str] = []
    if n < len(wide):
        dropped = [int(s) for s in wide.index.difference(complete.index)]
        notes.append(f"{len(dropped)} incomplete seed(s) excluded {dropped}")
    row: dict[str, Any] = {"n_seeds": n, "friedman_p": np.nan, "holm_p_smallest_vs_largest": np.nan}
    pts = complete.stack().reset_index(name="value")
    row["spearman_rho"] = spearman(np.log2(pts["batch_size"].to_numpy(float)), pts["value"].to_numpy(float))
    if n < 2 or k < 2:
        notes.insert(0, f"{n} complete seed(s) × {k} batch size(s) {sizes}: no test possible")
        return row | {"direction": "no_evidence", "note": "; ".join(notes)}
    x = complete.to_numpy(float)

    fried = friedman_test(x, rng, alpha)
    p_f = fried.get("p_value", np.nan)
    row["friedman_p"] = p_f

    diffs = x[:, 1:] - x[:, :1]
    pw = [wilcoxon_test(diffs[:, j], alpha).get("p_value", np.nan) for j in range(k - 1)]
    row["holm_p_smallest_vs_largest"] = holm(pw)[-1]
    holm_floor = (k - 1) * 2.0 / 2**n
    if holm_floor >= alpha:
        notes.append(
            f"Holm p ≥ {holm_floor:.3g} with {n} seeds × {k - 1} comparison(s): cannot reach p<{alpha}"
        )

    ranks = np.arange(k, dtype=float)
    rho_s = [spearman(ranks, r) for r in x]
    rho_bar = float(np.mean([0.0 if math.isnan(r) else r for r in rho_s]))
    delta = float(np.mean(x[:, -1] - x[:, 0]))
    trend = orientation * rho_bar
    failed = []
    if math.isnan(p_f):
        failed.append(f"Friedman p unavailable ({fried.get('note', 'no p-value')})")
    elif p_f >= alpha:
        failed.append(f"Friedman {_p_is(p_f)} ≥ {alpha}")
    if abs(rho_bar) < MIN_MEAN_WITHIN_SEED_RHO:
        lim = MIN_MEAN_WITHIN_SEED_RHO
        failed.append(f"non-monotone: mean within-seed ρ={rho_bar:.2f}, between −{lim} and {lim}")
    elif np.sign(delta) != np.sign(rho_bar):
        failed.append(
            f"ends disagree with trend: mean Δ({sizes[-1]}−{sizes[0]})={delta:.3g}, "
            f"mean within-seed ρ={rho_bar:.2f}"
        )
    if failed:
        direction = "no_evidence"
        head = "; ".join(failed)
    else:
        direction = "larger_better" if trend > 0 else "smaller_better"
        head = (
            f"Friedman {_p_is(p_f)} < {alpha}, mean within-seed ρ={rho_bar:.2f}, "
            f"mean Δ({sizes[-1]}−{sizes[0]})={delta:.3g}"
        )
    return row | {"direction": direction, "note": "; ".join([head, *notes])}


def compute_verdict(
    summary: pd.DataFrame,
    metrics: Mapping[str, str] | Sequence[str] = VERDICT_METRICS,
    group_cols: Sequence[str] = GROUP_COLS,
    alpha: float = ALPHA,
    seed: int = 0,
) -> pd.DataFrame:
    """One verdict row per group (default dataset × protocol) × metric with finite values.

    ``summary`` holds one row per (group columns, batch_size, seed) (tuned protocols: the selected
    learning rate only). ``metrics`` maps a metric to ``"higher"`` or ``"lower"`` (is better); a list of
    names uses :data:`VERDICT_METRICS`. ``seed`` seeds the Monte Carlo Friedman permutations. Without a
    ``protocol`` column the groups are datasets and ``protocol`` is empty.
    """
    orient = _orientation(metrics)
    groups = resolve_group_cols(summary, group_cols)
    summary = prepare_summary(summary, groups, list(orient))
    lead = output_group_cols(groups)
    rows = []
    for key, g in group_items(summary, groups):
        ident = {c: key.get(c, "") for c in lead}
        for m, o in orient.items():
            long = g[["seed", "batch_size"]].assign(value=finite_values(g[m])).dropna(subset=["value"])
            if not long.empty:
                rows.append(ident | {"metric": m} | verdict_one(long, o, alpha, _rng(seed, key, m)))
    out = pd.DataFrame(rows).reindex(columns=list(dict.fromkeys([*lead, *COLUMNS])))
    out["n_seeds"] = out["n_seeds"].astype("Int64")
    for c in ("spearman_rho", "friedman_p", "holm_p_smallest_vs_largest"):
        out[c] = out[c].astype(float)
    for c in (*lead, "metric", "direction", "note"):
        out[c] = out[c].fillna("").astype(object)
    return out


def _cell(v: Any, p: bool = False) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if p:
        return _fmt_p(float(v))
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def format_verdict_markdown(verdict: pd.DataFrame) -> str:
    """Markdown table of the verdict, one line per dataset × protocol × metric."""
    head = ["dataset", "protocol", "metric", "direction", "Spearman ρ", "Friedman p", "Holm p (largest)"]
    head += ["seeds", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in verdict.to_dict("records"):
        cells = [r["dataset"], r.get("protocol", ""), r["metric"], r["direction"], _cell(r["spearman_rho"])]
        cells += [_cell(r["friedman_p"], True), _cell(r["holm_p_smallest_vs_largest"], True)]
        cells += [_cell(r["n_seeds"]), str(r["note"]).replace("|", "\\|")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def compare_to_reference(verdict: pd.DataFrame, reference: str = "paper") -> pd.DataFrame:
    """Does the reference protocol's effect survive each controlled protocol? One row per dataset ×
    metric × other protocol: ``reference_direction``, ``direction`` and ``reading``:

    * ``survives``: both protocols give the same direction;
    * ``vanishes``: the reference shows a direction, the other protocol no evidence;
    * ``reverses``: opposite directions;
    * ``appears``: no evidence under the reference, a direction under the other;
    * ``no effect``: no evidence under either.
    """
    cols = ["dataset", "metric", "reference", "protocol", "reference_direction", "direction", "reading"]
    if verdict.empty or reference not in set(verdict["protocol"]):
        return pd.DataFrame(columns=cols)
    ref = verdict[verdict["protocol"] == reference].set_index(["dataset", "metric"])["direction"]
    rows = []
    for r in verdict[verdict["protocol"] != reference].itertuples(index=False):
        base = ref.get((r.dataset, r.metric))
        if base is None:
            continue
        if base == "no_evidence":
            reading = "no effect" if r.direction == "no_evidence" else "appears"
        elif r.direction == base:
            reading = "survives"
        elif r.direction == "no_evidence":
            reading = "vanishes"
        else:
            reading = "reverses"
        rows.append([r.dataset, r.metric, reference, r.protocol, base, r.direction, reading])
    return pd.DataFrame(rows, columns=cols)
