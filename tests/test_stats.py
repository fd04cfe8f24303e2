"""Statistics on constructed data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import ae_batch.evaluation.stats as st
from ae_batch.errors import DataError
from ae_batch.evaluation.stats import (
    compute_stats,
    format_stats_markdown,
    friedman_statistic,
    friedman_test,
    holm,
    rank_biserial,
    wilcoxon_test,
)

BS = [1, 4, 16, 32, 64, 128]


def _summary(
    n_seeds: int, slope: float, noise: float, rng: np.random.Generator, ds: str = "ehr", block_sd: float = 0.0
) -> pd.DataFrame:
    """metric = slope * log2(batch size) + per-seed offset (sd block_sd) + noise."""
    seed, b = np.repeat(np.arange(n_seeds), len(BS)), np.tile(BS, n_seeds)
    block = rng.normal(0, block_sd, n_seeds)[seed]
    value = slope * np.log2(b) + block + rng.normal(0, noise, b.size)
    return pd.DataFrame({"dataset": ds, "batch_size": b, "seed": seed, "loss": value})


def _rows(out: pd.DataFrame, test: str, metric: str = "loss") -> pd.DataFrame:
    return out[(out["test"] == test) & (out["metric"] == metric)]


def test_planted_monotone_effect_is_detected_with_the_right_sign() -> None:
    out = compute_stats(_summary(8, 0.1, 0.01, np.random.default_rng(0)), ["loss"], n_bootstrap=500)
    fr = _rows(out, "friedman").iloc[0]
    assert fr["p_value"] < 0.01 and fr["n_blocks"] == 8
    assert fr["effect_size"] == pytest.approx(1.0)  # every seed ranks the batch sizes identically
    wx = _rows(out, "wilcoxon")
    assert list(wx["batch_size"]) == BS[1:] and (wx["reference_batch_size"] == 1).all()
    np.testing.assert_allclose(wx["p_value"].to_numpy(float), 2 / 2**8)  # exact: all 8 diffs positive
    np.testing.assert_allclose(wx["p_holm"].to_numpy(float), 5 * 2 / 2**8)  # Holm over 5 equal p's
    assert (wx["p_holm"] < 0.05).all()
    assert (wx["effect_size"] == 1.0).all() and (wx["direction"] == "increase").all()
    expected = 0.1 * np.log2(np.array(BS[1:]))
    np.testing.assert_allclose(wx["mean_diff"].to_numpy(float), expected, atol=0.02)
    sp = _rows(out, "spearman_trend").iloc[0]
    assert sp["effect_size"] > 0.8 and sp["ci_low"] > 0 and sp["ci_high"] <= 1
    assert sp["p_value"] == pytest.approx(1 / (st.N_PERMUTATIONS + 1))  # no within-seed shuffle beats it
    assert sp["method"].startswith("within-seed permutation")
    assert set(out["test"]) == {"friedman", "wilcoxon", "spearman_trend"}


def test_planted_decrease_gives_negative_signs() -> None:
    out = compute_stats(_summary(8, -0.1, 0.01, np.random.default_rng(1)), ["loss"], n_bootstrap=200)
    wx = _rows(out, "wilcoxon")
    assert (wx["mean_diff"] < 0).all() and (wx["effect_size"] == -1.0).all()
    sp = _rows(out, "spearman_trend").iloc[0]
    assert sp["effect_size"] < -0.8 and sp["ci_high"] < 0 and sp["direction"] == "decrease"


def test_blocking_removes_seed_offsets_that_dilute_the_pooled_trend() -> None:
    df = _summary(8, 0.1, 0.01, np.random.default_rng(10), block_sd=1.0)
    out = compute_stats(df, ["loss"], n_bootstrap=200)
    assert _rows(out, "friedman").iloc[0]["p_value"] < 0.01
    assert (_rows(out, "wilcoxon")["p_holm"] < 0.05).all()
    assert _rows(out, "spearman_trend").iloc[0]["effect_size"] < 0.8  # pooled over seeds: not blocked


def test_pure_noise_rejects_at_about_the_nominal_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "N_PERMUTATIONS", 999)
    rng = np.random.default_rng(123)
    fried, fried_chi2, fwer, trend = [], [], [], []
    for _ in range(200):
        x = rng.normal(size=(8, 6)) + rng.normal(size=(8, 1))
        fried.append(friedman_test(x, rng)["p_value"] < 0.05)
        p = [wilcoxon_test(x[:, j] - x[:, 0])["p_value"] for j in range(1, 6)]
        fwer.append(np.nanmin(holm(p)) < 0.05)
        res = friedman_test(rng.normal(size=(30, 6)), rng)
        assert res["method"] == "chi-square approximation"
        fried_chi2.append(res["p_value"] < 0.05)
        long = pd.DataFrame({"seed": np.repeat(np.arange(8), 6), "batch_size": np.tile(BS, 8)})
        trend.append(st.spearman_trend(long.assign(value=x.ravel()), 0, rng)["p_value"] < 0.05)
    assert 0 < np.mean(fried) <= 0.1
    assert np.mean(trend) <= 0.1
    assert np.mean(fried_chi2) <= 0.1
    assert np.mean(fwer) <= 0.1


def test_three_seeds_leave_wilcoxon_p_empty_but_compute_friedman() -> None:
    out = compute_stats(_summary(3, 0.1, 0.01, np.random.default_rng(2)), ["loss"], n_bootstrap=100)
    wx = _rows(out, "wilcoxon")
    assert wx["p_value"].isna().all() and wx["p_holm"].isna().all()
    assert wx["note"].str.contains("only 3 paired blocks: Wilcoxon cannot reach p<0.05").all()
    assert (wx["mean_diff"] > 0).all() and (wx["effect_size"] == 1.0).all()
    fr = _rows(out, "friedman").iloc[0]
    assert 0 < fr["p_value"] < 0.01 and fr["method"].startswith("Monte Carlo permutation")
    assert "crude" in _rows(out, "spearman_trend").iloc[0]["note"]


def test_holm_matches_hand_computation() -> None:
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.02, np.nan, 0.04]), [0.04, np.nan, 0.04])  # m = 2
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    assert holm([]).size == 0


def test_kendalls_w_and_friedman_statistic() -> None:
    consistent = np.arange(1.0, 7.0) + np.arange(5.0)[:, None] * 10  # 5 blocks, same order everywhere
    q, w = friedman_statistic(consistent)
    assert w == pytest.approx(1.0) and q == pytest.approx(5 * 5)  # Q = n (k-1) W
    latin = np.array([[1, 2, 3], [2, 3, 1], [3, 1, 2]], float)
    assert friedman_statistic(latin)[1] == pytest.approx(0.0)
    tied = np.random.default_rng(3).integers(0, 3, size=(12, 4)).astype(float)
    assert friedman_statistic(tied)[0] == pytest.approx(sps.friedmanchisquare(*tied.T).statistic)


def test_friedman_exact_permutation_known_values() -> None:
    rng = np.random.default_rng(0)
    res = friedman_test(np.array([[1, 2, 3, 4], [1, 2, 3, 4]], float), rng)
    assert res["p_value"] == pytest.approx(1 / 24) and res["method"].startswith("exact")
    res = friedman_test(np.tile([0.0, 1.0], (6, 1)), rng)  # k = 2: the exact sign test, 2/2**6
    assert res["p_value"] == pytest.approx(1 / 32)
    for x in (np.tile([0.0, 1.0], (5, 1)), np.tile([0.0, 1.0, 2.0], (2, 1))):
        res = friedman_test(x, rng)
        assert "p_value" not in res and "cannot reach p<0.05" in res["note"]
        assert res["effect_size"] == pytest.approx(1.0)
    assert "needs ≥2" in friedman_test(np.array([[1.0, 2.0, 3.0]]), rng)["note"]


def test_rank_biserial_and_wilcoxon() -> None:
    assert rank_biserial(np.array([0.1, 2.0, 0.3, 4.0])) == 1.0
    assert rank_biserial(-np.array([0.1, 2.0, 0.3])) == -1.0
    assert rank_biserial(np.array([1.0, -2.0, 3.0, 4.0])) == pytest.approx(0.6)  # (8 - 2) / 10
    assert rank_biserial(np.array([0.0, 1.0, -2.0, 3.0, 4.0])) == pytest.approx(0.6)  # zero dropped
    d = np.array([0.5, -0.2, 1.1, 0.9, 0.3, 1.4, -0.05, 0.7])
    res = wilcoxon_test(d)
    assert res["p_value"] == pytest.approx(sps.wilcoxon(d).pvalue) and res["method"] == "exact"
    res = wilcoxon_test(np.array([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))
    assert "only 5 non-zero differences" in res["note"] and "p_value" not in res


def test_all_ties_do_not_crash() -> None:
    df = _summary(8, 0.0, 0.0, np.random.default_rng(4)).assign(loss=1.0)
    out = compute_stats(df, ["loss"], n_bootstrap=50)
    fr = _rows(out, "friedman").iloc[0]
    assert fr["p_value"] == 1.0 and "tied" in fr["note"] and np.isnan(fr["effect_size"])
    wx = _rows(out, "wilcoxon")
    assert (wx["p_value"] == 1.0).all() and wx["note"].str.contains("all differences zero").all()
    assert (wx["mean_diff"] == 0).all() and (wx["direction"] == "none").all()
    sp = _rows(out, "spearman_trend").iloc[0]
    assert np.isnan(sp["p_value"]) and "undefined" in sp["note"]


def test_nan_metrics_are_skipped_and_incomplete_blocks_dropped() -> None:
    df = _summary(8, 0.1, 0.01, np.random.default_rng(5)).assign(codebook_perplexity=np.nan)
    df.loc[(df["seed"] == 0) & (df["batch_size"] == 64), "loss"] = np.nan
    df.loc[(df["seed"] == 1) & (df["batch_size"] == 16), "loss"] = np.inf
    out = compute_stats(df, ["loss", "codebook_perplexity"], n_bootstrap=50)
    na = out[out["metric"] == "codebook_perplexity"]
    assert len(na) == 1 and na.iloc[0]["test"] == "none" and "not applicable" in na.iloc[0]["note"]
    fr = _rows(out, "friedman").iloc[0]
    assert fr["n_blocks"] == 6 and "2 incomplete block(s) dropped" in fr["note"]
    n_pairs = _rows(out, "wilcoxon").set_index("batch_size")["n_blocks"]
    assert n_pairs.to_dict() == {4: 8, 16: 7, 32: 8, 64: 7, 128: 8}
    assert _rows(out, "spearman_trend").iloc[0]["n_obs"] == 46


def test_reproducible_and_formats() -> None:
    df = pd.concat(
        [
            _summary(8, 0.1, 0.3, np.random.default_rng(7)),
            _summary(3, 0.0, 1.0, np.random.default_rng(8), "mri"),
        ]
    )
    a = compute_stats(df, ["loss"], n_bootstrap=200, seed=3)
    b = compute_stats(df, ["loss"], n_bootstrap=200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns[:5]) == ["dataset", "protocol", "metric", "test", "batch_size"]
    assert (a["protocol"] == "").all()  # an old table without protocols: groups are datasets
    assert a["batch_size"].isna().sum() == 4  # friedman and trend rows of both datasets
    md = format_stats_markdown(a)
    assert md.count("\n") == len(a) + 2 and "| ehr |  | loss | wilcoxon | 4 vs 1 |" in md


def test_one_batch_size_and_bad_input() -> None:
    df = _summary(8, 0.1, 0.01, np.random.default_rng(9))
    out = compute_stats(df[df["batch_size"] == 4], ["loss"], n_bootstrap=20)
    assert list(out["test"]) == ["friedman", "spearman_trend"] and "needs ≥2" in out.iloc[0]["note"]
    with pytest.raises(DataError, match="missing_metric"):
        compute_stats(df, ["missing_metric"])
    with pytest.raises(DataError, match="duplicated"):
        compute_stats(pd.concat([df, df.head(1)]), ["loss"])


def test_protocols_are_analysed_separately() -> None:
    rng = np.random.default_rng(11)
    df = pd.concat(
        [
            _summary(8, 0.1, 0.01, rng).assign(protocol="epochs_fixed"),
            _summary(8, 0.0, 1.0, rng).assign(protocol="steps_sqrt"),
        ]
    )
    out = compute_stats(df, ["loss"], n_bootstrap=100)
    assert list(out.columns[:3]) == ["dataset", "protocol", "metric"]
    assert set(out["protocol"]) == {"epochs_fixed", "steps_sqrt"}
    fr = out[out["test"] == "friedman"].set_index("protocol")
    assert (fr["n_blocks"] == 8).all()  # seeds are blocks within a protocol, never pooled across
    assert fr.loc["epochs_fixed", "p_value"] < 0.01 and fr.loc["steps_sqrt", "p_value"] > 0.01
    wx = out[(out["test"] == "wilcoxon") & (out["protocol"] == "epochs_fixed")]
    assert (wx["p_holm"] < 0.05).all()
    with pytest.raises(DataError, match="duplicated"):  # pooled over protocols, a seed repeats
        compute_stats(df, ["loss"], group_cols=("dataset",))
    only = compute_stats(
        df[df["protocol"] == "steps_sqrt"], ["loss"], group_cols=("dataset",), n_bootstrap=20
    )
    assert (only["protocol"] == "").all() and len(only) == 7


def test_no_fold_level_inference() -> None:
    import inspect

    assert "folds" not in inspect.signature(compute_stats).parameters
    rng = np.random.default_rng(12)
    df = _summary(6, 0.1, 0.01, rng).assign(sex_auroc_mean=0.7, protocol="p")
    out = compute_stats(df, ["loss", "sex_auroc_mean"], n_bootstrap=20)
    assert not out["metric"].str.endswith("_folds").any()
    assert (out.loc[out["test"] != "spearman_trend", "n_blocks"] == 6).all()  # blocks are the 6 seeds
    assert not out["note"].str.contains("fold").any()
