"""Verdict table on constructed studies with a known answer (numpy/pandas only, fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ae_batch.evaluation.stats as st
from ae_batch.errors import DataError
from ae_batch.evaluation.verdict import COLUMNS, VERDICT_METRICS, compute_verdict, format_verdict_markdown

BS = [1, 4, 16, 32, 64, 128]
POS = np.arange(len(BS), dtype=float)  # position of each batch size, smallest first


def _study(
    shape: np.ndarray, n_seeds: int = 6, noise: float = 0.01, seed: int = 0, block_sd: float = 1.0, **cols
) -> pd.DataFrame:
    """One dataset × protocol: value = shape[batch size] + per-seed offset + noise, in every metric column.

    ``cols`` sets extra columns (e.g. protocol="p", or codebook_perplexity=np.nan).
    """
    rng = np.random.default_rng(seed)
    s, j = np.repeat(np.arange(n_seeds), len(BS)), np.tile(np.arange(len(BS)), n_seeds)
    value = np.asarray(shape, float)[j] + rng.normal(0, block_sd, n_seeds)[s] + rng.normal(0, noise, s.size)
    df = pd.DataFrame(
        {"dataset": "ehr", "protocol": "epochs_fixed", "batch_size": np.array(BS)[j], "seed": s}
    )
    for m in VERDICT_METRICS:
        df[m] = value
    return df.assign(**cols)


def _one(v: pd.DataFrame, metric: str = "test_recon_loss", **where) -> pd.Series:
    m = v["metric"] == metric
    for c, val in where.items():
        m &= v[c] == val
    assert m.sum() == 1, v
    return v[m].iloc[0]


def test_columns_are_exactly_the_shared_ones() -> None:
    v = compute_verdict(_study(0.1 * POS))
    assert list(v.columns) == COLUMNS == [
        "dataset", "protocol", "metric", "direction", "spearman_rho", "friedman_p",
        "holm_p_smallest_vs_largest", "n_seeds", "note",
    ]  # fmt: skip
    assert list(v["metric"]) == list(VERDICT_METRICS)
    assert set(v["direction"]) <= {"smaller_better", "larger_better", "no_evidence"}


def test_planted_monotone_effect_smaller_batch_better() -> None:
    # the loss rises with batch size, the other (higher-is-better) metrics fall: smaller is better for all
    df = _study(0.1 * POS)
    for m in ("sex_auroc_mean", "laterality_r2_mean", "latent_effective_rank", "codebook_perplexity"):
        df[m] = -df["test_recon_loss"]
    v = compute_verdict(df)
    assert (v["direction"] == "smaller_better").all(), v["note"].tolist()
    assert (v["friedman_p"] < 0.001).all() and (v["n_seeds"] == 6).all()
    loss = _one(v)
    assert loss["spearman_rho"] > 0 and "mean within-seed ρ=1.00" in loss["note"]
    assert _one(v, "sex_auroc_mean")["spearman_rho"] < 0


def test_reverse_effect_larger_batch_better() -> None:
    df = _study(-0.1 * POS)  # loss falls with batch size
    df["sex_auroc_mean"] = -df["sex_auroc_mean"]  # AUROC rises with batch size
    v = compute_verdict(df, metrics=["test_recon_loss", "sex_auroc_mean"])
    assert list(v["direction"]) == ["larger_better", "larger_better"]


def test_orientation_loss_versus_auroc() -> None:
    # the same numbers rising with batch size: bad for a loss, good for an AUROC
    df = _study(0.1 * POS)
    v = compute_verdict(df, metrics={"test_recon_loss": "lower", "sex_auroc_mean": "higher"})
    assert _one(v)["direction"] == "smaller_better"
    assert _one(v, "sex_auroc_mean")["direction"] == "larger_better"
    assert _one(v)["spearman_rho"] == _one(v, "sex_auroc_mean")["spearman_rho"] > 0  # rho is not oriented
    with pytest.raises(ValueError, match="orientation"):
        compute_verdict(df, metrics={"test_recon_loss": "smaller"})
    with pytest.raises(ValueError, match="no orientation known"):
        compute_verdict(df, metrics=["val_recon_loss"])


def test_pure_noise_rarely_gets_a_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "N_PERMUTATIONS", 999)
    verdicts, friedman = [], []
    for i in range(100):
        v = compute_verdict(_study(np.zeros(len(BS)), noise=1.0, seed=100 + i), metrics=["test_recon_loss"])
        verdicts.append(v.iloc[0]["direction"])
        friedman.append(v.iloc[0]["friedman_p"] < 0.05)
    assert np.mean(np.array(verdicts) == "no_evidence") >= 0.9
    assert np.mean(friedman) <= 0.12  # the permutation Friedman test holds its level


def test_u_shape_with_significant_friedman_gets_no_direction() -> None:
    df = _study(0.1 * (POS - 2.5) ** 2)  # symmetric U over the batch-size positions
    v = compute_verdict(df, metrics=["test_recon_loss", "sex_auroc_mean"])
    for m in ("test_recon_loss", "sex_auroc_mean"):
        r = _one(v, m)
        assert r["friedman_p"] < 0.001 and r["direction"] == "no_evidence"
        assert "non-monotone: mean within-seed ρ=" in r["note"] and "Friedman" not in r["note"]


def test_ends_disagreeing_with_the_trend_get_no_direction() -> None:
    df = _study(0.01 * POS, block_sd=0.0, noise=0.001)
    crash = (df["seed"] == 5) & (df["batch_size"] == 128)
    df.loc[crash, "test_recon_loss"] = -10.0  # five seeds rise slowly, one falls far at the largest batch
    r = _one(compute_verdict(df, metrics=["test_recon_loss"]))
    assert r["friedman_p"] < 0.05 and r["direction"] == "no_evidence"
    assert "ends disagree with trend: mean Δ(128−1)=" in r["note"]


def test_friedman_not_significant_is_named() -> None:
    r = _one(compute_verdict(_study(np.zeros(len(BS)), noise=1.0, seed=3), metrics=["test_recon_loss"]))
    assert r["direction"] == "no_evidence"
    assert r["friedman_p"] >= 0.05 and f"Friedman p={r['friedman_p']:.3g} ≥ 0.05" in r["note"]


def test_holm_note_with_six_seeds_not_with_eight() -> None:
    six = _one(compute_verdict(_study(0.1 * POS), metrics=["test_recon_loss"]))
    assert six["holm_p_smallest_vs_largest"] == pytest.approx(5 * 2 / 2**6)  # 0.156: its floor
    assert "Holm p ≥ 0.156 with 6 seeds × 5 comparison(s): cannot reach p<0.05" in six["note"]
    assert six["direction"] == "smaller_better"  # decidable with 6 seeds although Holm cannot be
    eight = _one(compute_verdict(_study(0.1 * POS, n_seeds=8), metrics=["test_recon_loss"]))
    assert eight["holm_p_smallest_vs_largest"] == pytest.approx(5 * 2 / 2**8)
    assert "Holm" not in eight["note"]


def test_nan_only_metric_is_skipped() -> None:
    df = pd.concat(
        [
            _study(0.1 * POS, codebook_perplexity=np.nan, laterality_r2_mean=np.inf),
            _study(0.1 * POS, dataset="mri"),
        ]
    )
    v = compute_verdict(df)
    ehr, mri = v[v["dataset"] == "ehr"], v[v["dataset"] == "mri"]
    assert list(ehr["metric"]) == ["test_recon_loss", "sex_auroc_mean", "latent_effective_rank"]
    assert list(mri["metric"]) == list(VERDICT_METRICS)
    assert compute_verdict(df.assign(sex_auroc_mean=np.nan), metrics=["sex_auroc_mean"]).empty


def test_incomplete_seeds_are_excluded_and_counted() -> None:
    df = _study(0.1 * POS, n_seeds=8)
    df.loc[(df["seed"] == 2) & (df["batch_size"] == 16), "test_recon_loss"] = np.nan
    df = df[~((df["seed"] == 5) & (df["batch_size"] == 128))]  # a run that never finished
    r = _one(compute_verdict(df))
    assert r["n_seeds"] == 6 and "2 incomplete seed(s) excluded [2, 5]" in r["note"]
    assert r["holm_p_smallest_vs_largest"] == pytest.approx(5 * 2 / 2**6)  # complete seeds only
    assert _one(compute_verdict(df), "sex_auroc_mean")["n_seeds"] == 7  # only seed 5 lacks a value
    one_size = _one(compute_verdict(df[df["batch_size"] == 4]))
    assert one_size["direction"] == "no_evidence" and "no test possible" in one_size["note"]
    assert np.isnan(one_size["friedman_p"]) and one_size["n_seeds"] == 8


def test_few_seeds_leave_friedman_empty_with_the_reason() -> None:
    df = _study(0.1 * POS, n_seeds=6)
    r = _one(compute_verdict(df[df["batch_size"].isin([1, 128]) & (df["seed"] < 4)]))
    assert np.isnan(r["friedman_p"]) and r["direction"] == "no_evidence"
    assert "smallest attainable p is 0.125, cannot reach p<0.05" in r["note"]


def test_protocols_are_analysed_separately() -> None:
    df = pd.concat(
        [
            _study(0.1 * POS, seed=1, protocol="epochs_fixed"),
            _study(np.zeros(len(BS)), noise=1.0, seed=3, protocol="steps_sqrt"),
        ]
    )
    v = compute_verdict(df, metrics=["test_recon_loss"])
    assert list(v["protocol"]) == ["epochs_fixed", "steps_sqrt"]
    assert _one(v, protocol="epochs_fixed")["direction"] == "smaller_better"
    assert _one(v, protocol="steps_sqrt")["direction"] == "no_evidence"
    assert (v["n_seeds"] == 6).all()
    alone = compute_verdict(df[df["protocol"] == "epochs_fixed"], metrics=["test_recon_loss"])
    pd.testing.assert_frame_equal(alone, v.iloc[:1])  # a group's result does not depend on the others


def test_old_table_without_protocol_and_duplicates() -> None:
    df = _study(0.1 * POS).drop(columns="protocol")
    v = compute_verdict(df, metrics=["test_recon_loss"])
    assert list(v.columns) == COLUMNS and (v["protocol"] == "").all()
    assert v.iloc[0]["direction"] == "smaller_better"
    with pytest.raises(DataError, match=r"duplicated .*'batch_size': 1, 'seed': 0"):
        compute_verdict(pd.concat([df, df.head(1)]))
    with pytest.raises(DataError, match="sex_auroc_mean"):
        compute_verdict(df.drop(columns="sex_auroc_mean"))


def test_reproducible_and_markdown() -> None:
    df = pd.concat([_study(0.1 * POS), _study((POS - 2.5) ** 2, dataset="mri")])
    a, b = compute_verdict(df, seed=4), compute_verdict(df, seed=4)
    pd.testing.assert_frame_equal(a, b)
    md = format_verdict_markdown(a)
    assert md.count("\n") == len(a) + 2
    assert "| ehr | epochs_fixed | test_recon_loss | smaller_better | 0." in md
    assert "| mri | epochs_fixed | test_recon_loss | no_evidence |" in md
