"""Figures: one valid PNG per applicable metric, plotted means equal the data, robustness on thin inputs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ae_batch import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BATCH_SIZES = (1, 4, 16)
SEEDS = (0, 1)
N_TEST, N_VAL, LATENT_DIM = 30, 10, 6


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 2000, f"{path} is suspiciously small ({len(data)} bytes)"
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300


def value(bs: int, seed: int) -> float:
    """Deterministic metric: a trend in log2(batch size) plus a seed offset."""
    return 0.1 + 0.02 * np.log2(bs) + 0.005 * seed


def fake_summary(datasets: dict[str, bool], batch_sizes=BATCH_SIZES, seeds=SEEDS) -> pd.DataFrame:
    rows = []
    for ds, mri in datasets.items():
        for bs in batch_sizes:
            for seed in seeds:
                v = value(bs, seed)
                rows.append(
                    {
                        "dataset": ds,
                        "batch_size": bs,
                        "seed": seed,
                        "steps": 4 * int(np.ceil(100 / bs)),
                        "test_recon_loss": v,
                        "val_recon_loss": v + 0.01,
                        "latent_effective_rank": 6 - np.log2(bs) / 2 + seed,
                        "sex_auroc_mean": 0.7 - 0.01 * np.log2(bs) + 0.02 * seed,
                        "laterality_r2_mean": 0.3 - 0.01 * bs if mri else np.nan,
                        "codebook_perplexity": np.nan,
                    }
                )
    return pd.DataFrame(rows)


def fake_baselines(datasets: dict[str, bool]) -> pd.DataFrame:
    rows = []
    for ds, mri in datasets.items():
        for rep, auc in (("raw", 0.65), ("pca32", 0.6)):
            rows.append(
                {
                    "dataset": ds,
                    "representation": rep,
                    "n_features": 32,
                    "sex_auroc_mean": auc,
                    "sex_auroc_std": 0.02,
                    "laterality_r2_mean": 0.2 if mri else np.nan,
                }
            )
    return pd.DataFrame(rows)


def write_study(root: Path, datasets: dict[str, bool], summary: pd.DataFrame) -> None:
    """The per-grid-point files the pipeline writes, for every row of ``summary``."""
    rng = np.random.default_rng(0)
    for ds, mri in datasets.items():
        ids = [f"s{i:03d}" for i in range(N_VAL + N_TEST)]
        subjects = pd.DataFrame(
            {"subject_id": ids, "split": ["val"] * N_VAL + ["test"] * N_TEST, "sex": rng.integers(0, 2, 40)}
        )
        if mri:
            subjects["laterality"] = rng.uniform(-1, 1, len(ids))
            subjects.loc[3, "laterality"] = np.nan
        prepared = root / ds / "prepared"
        prepared.mkdir(parents=True)
        subjects.to_csv(prepared / "subjects.csv", index=False)
        (prepared / "meta.json").write_text(json.dumps({"sex_mapping": {"F": 0, "M": 1}}))
        for row in summary[summary["dataset"] == ds].itertuples():
            run = root / ds / f"bs{row.batch_size}" / f"seed{row.seed}"
            run.mkdir(parents=True)
            steps_per_epoch = int(np.ceil(100 / row.batch_size))
            epochs = np.arange(1, 5)
            pd.DataFrame(
                {
                    "epoch": epochs,
                    "step": epochs * steps_per_epoch,
                    "samples": epochs * 100,
                    "train_loss": 1.0 / epochs,
                    "val_loss": 1.0 / epochs + 0.01 * row.seed + 0.001 * row.batch_size,
                    "seconds": epochs * 0.1,
                    "samples_per_second": 1000.0,
                }
            ).to_csv(run / "history.csv", index=False)
            np.savez(
                run / "latents.npz",
                val=rng.normal(size=(N_VAL, LATENT_DIM)),
                test=rng.normal(size=(N_TEST, LATENT_DIM)),
                val_ids=np.array(ids[:N_VAL]),
                test_ids=np.array(ids[N_VAL:]),
            )
            pd.DataFrame(
                {
                    "subject_id": ids,
                    "split": subjects["split"],
                    "recon_loss": rng.lognormal(np.log(row.test_recon_loss), 1.0, len(ids)),
                }
            ).to_csv(run / "per_subject.csv", index=False)


DATASETS = {"ehr_a": False, "mri_b": True}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("study")
    summary = fake_summary(DATASETS)
    write_study(root, DATASETS, summary)
    return root, summary, fake_baselines(DATASETS)


def test_one_png_per_applicable_metric(tmp_path, study):
    _, summary, baselines = study
    paths = figures.plot_metric_vs_batch_size(summary, baselines, "ehr_a", tmp_path)
    expected = ["test_recon_loss", "val_recon_loss", "latent_effective_rank", "sex_auroc_mean", "steps"]
    assert sorted(p.name for p in paths) == sorted(f"ehr_a_{m}_vs_batch_size.png" for m in expected)
    for p in paths:
        assert_png(p)
    assert not list(tmp_path.glob("*codebook*")) and not list(tmp_path.glob("*laterality*"))
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"
    assert "laterality_r2_mean" in figures.applicable_metrics(summary, "mri_b")
    assert "codebook_perplexity" not in figures.applicable_metrics(summary, "mri_b")


def test_plotted_mean_equals_per_batch_size_mean(study):
    _, summary, baselines = study
    fig = figures.metric_figure(summary, baselines, "ehr_a", "test_recon_loss")
    try:
        (line,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == "mean"]
        expected = summary[summary["dataset"] == "ehr_a"].groupby("batch_size")["test_recon_loss"].mean()
        np.testing.assert_array_equal(line.get_xdata(), expected.index.to_numpy())
        np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
        np.testing.assert_allclose(
            line.get_ydata(), [np.mean([value(b, s) for s in SEEDS]) for b in BATCH_SIZES]
        )
        assert fig.axes[0].get_xscale() == "log"
    finally:
        plt.close(fig)


def test_seed_summary_is_a_t_interval(study):
    _, summary, _ = study
    table = figures.seed_summary(summary, "ehr_a", "test_recon_loss")
    sd = np.std([value(1, s) for s in SEEDS], ddof=1)
    half = sps.t.ppf(0.975, len(SEEDS) - 1) * sd / np.sqrt(len(SEEDS))
    row = table[table["batch_size"] == 1].iloc[0]
    assert row["n"] == len(SEEDS)
    assert row["ci_high"] - row["mean"] == pytest.approx(half)
    assert row["mean"] - row["ci_low"] == pytest.approx(half)
    one_seed = figures.seed_summary(summary[summary["seed"] == 0], "ehr_a", "test_recon_loss")
    assert one_seed["ci_low"].isna().all()


def test_baselines_are_dashed_lines_where_the_metric_exists(study):
    _, summary, baselines = study
    fig = figures.metric_figure(summary, baselines, "ehr_a", "sex_auroc_mean")
    try:
        lines = {ln.get_label(): ln for ln in fig.axes[0].lines if ln.get_label().startswith("baseline")}
        assert set(lines) == {"baseline: raw", "baseline: pca32"}
        assert lines["baseline: raw"].get_linestyle() == "--"
        assert lines["baseline: raw"].get_ydata()[0] == pytest.approx(0.65)
    finally:
        plt.close(fig)
    fig = figures.metric_figure(summary, baselines, "ehr_a", "latent_effective_rank")
    try:
        assert not [ln for ln in fig.axes[0].lines if ln.get_label().startswith("baseline")]
    finally:
        plt.close(fig)


def test_learning_curves_colour_by_batch_size(study):
    root, _, _ = study
    histories = {
        (bs, s): pd.read_csv(root / "ehr_a" / f"bs{bs}" / f"seed{s}" / "history.csv")
        for bs in BATCH_SIZES
        for s in SEEDS
    }
    fig = figures.learning_curves_figure(histories, "ehr_a")
    try:
        by_epoch, by_step = fig.axes[:2]
        assert by_step.get_xscale() == "log"
        means = {ln.get_gid(): ln for ln in by_epoch.lines if ln.get_gid()}
        assert set(means) == {f"bs{b}" for b in BATCH_SIZES}
        assert len({ln.get_color() for ln in means.values()}) == len(BATCH_SIZES)
        # two thin seed lines per batch size in the colour of that batch size's mean line
        for bs in BATCH_SIZES:
            thin = [
                ln
                for ln in by_epoch.lines
                if not ln.get_gid() and ln.get_color() == means[f"bs{bs}"].get_color()
            ]
            assert len(thin) == len(SEEDS)
        step_mean = {ln.get_gid(): ln for ln in by_step.lines if ln.get_gid()}["bs4"]
        np.testing.assert_array_equal(step_mean.get_xdata(), np.arange(1, 5) * 25)
    finally:
        plt.close(fig)


def test_latent_projection_rows(study):
    root, _, _ = study
    labels = pd.read_csv(root / "mri_b" / "prepared" / "subjects.csv").query("split == 'test'")
    rng = np.random.default_rng(1)
    latents = {bs: rng.normal(size=(N_TEST, LATENT_DIM)) for bs in BATCH_SIZES}
    fig = figures.latent_projections_figure(latents, labels.reset_index(drop=True), "mri_b")
    try:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert len(panels) == 2 * len(BATCH_SIZES), "a laterality row under the sex row"
        assert len(fig.axes) == len(panels) + 1, "one laterality colorbar"
    finally:
        plt.close(fig)
    fig = figures.latent_projections_figure(latents, labels.drop(columns="laterality"), "mri_b")
    try:
        assert len(fig.axes) == len(BATCH_SIZES)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="label rows"):
        figures.latent_projections_figure(latents, labels.iloc[:5], "mri_b")


def test_pca_2d_orders_components_and_is_deterministic():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4)) * np.array([5.0, 2.0, 0.5, 0.1])
    xy, ratio = figures.pca_2d(z)
    assert xy.shape == (50, 2) and ratio[0] > ratio[1] > 0 and ratio.sum() <= 1
    assert xy[:, 0].var() > xy[:, 1].var()
    np.testing.assert_allclose(figures.pca_2d(z)[0], xy)
    np.testing.assert_allclose(figures.pca_2d(z[:, :1])[0][:, 1], 0)  # 1-d latents: PC2 is zero
    assert figures.pca_2d(z[:1])[0].shape == (1, 2)


def test_recon_loss_log_axis_only_when_spread():
    spread = {1: np.array([0.001, 0.01, 0.1, 1.0]), 4: np.array([0.5, 0.6])}
    fig = figures.recon_loss_figure(spread, "x")
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)
    narrow = {1: np.array([0.5, 0.6, 0.7]), 4: np.array([-0.1, 0.6, np.nan])}
    fig = figures.recon_loss_figure(narrow, "x")
    assert fig.axes[0].get_yscale() == "linear"
    plt.close(fig)


def test_make_study_figures_writes_every_kind(study):
    root, summary, baselines = study
    # fewer metric columns keep the test fast; metric selection is tested above
    few = summary.drop(columns=["val_recon_loss", "latent_effective_rank", "steps", "sex_auroc_mean"])
    made = figures.make_study_figures(root, root, few, baselines)
    assert set(made) == set(figures.KINDS)
    for kind in ("learning_curves", "latent_projections", "recon_loss_distributions"):
        assert [p.name for p in made[kind]] == [f"{ds}_{kind}.png" for ds in sorted(DATASETS)]
    assert [p.name for p in made["metric_vs_batch_size"]] == [
        "ehr_a_test_recon_loss_vs_batch_size.png",
        "mri_b_test_recon_loss_vs_batch_size.png",
        "mri_b_laterality_r2_mean_vs_batch_size.png",
    ]
    for kind, paths in made.items():
        for p in paths:
            assert p.parent == root / "figures" / kind
            assert_png(p)
        assert not list((root / "figures" / kind).glob(".*"))


def test_make_study_figures_is_robust(tmp_path):
    # "single": one batch size and seed, no latents file, history without a step column, broken meta.json
    # "other": two batch sizes, one grid folder missing entirely, no prepared folder (no labels)
    summary = pd.concat(
        [
            fake_summary({"single": True}, batch_sizes=(8,), seeds=(3,)),
            fake_summary({"other": False}, batch_sizes=(2, 32), seeds=(0,)),
        ],
        ignore_index=True,
    )
    write_study(tmp_path, {"single": True}, summary[summary["dataset"] == "single"])
    write_study(tmp_path, {"other": False}, summary.query("dataset == 'other' and batch_size == 2"))
    run = tmp_path / "single" / "bs8" / "seed3"
    (run / "latents.npz").unlink()
    pd.read_csv(run / "history.csv").drop(columns="step").to_csv(run / "history.csv", index=False)
    (tmp_path / "single" / "prepared" / "meta.json").write_text("not json")
    for f in (tmp_path / "other" / "prepared").iterdir():
        f.unlink()
    (tmp_path / "other" / "prepared").rmdir()
    # only some columns, an all-NA object column and an all-NA float column
    thin = summary[["dataset", "batch_size", "seed", "test_recon_loss"]].assign(
        codebook_usage=np.nan, sex_auroc_mean=pd.Series([pd.NA] * len(summary), dtype=object)
    )
    made = figures.make_study_figures(tmp_path, tmp_path, thin, None)
    assert [p.name for p in made["metric_vs_batch_size"]] == [
        "other_test_recon_loss_vs_batch_size.png",
        "single_test_recon_loss_vs_batch_size.png",
    ]
    assert [p.name for p in made["latent_projections"]] == ["other_latent_projections.png"]
    assert len(made["learning_curves"]) == len(made["recon_loss_distributions"]) == 2
    for paths in made.values():
        for p in paths:
            assert_png(p)
    empty = figures.make_study_figures(tmp_path, tmp_path, thin.iloc[:0], None)
    assert empty == {k: [] for k in figures.KINDS}


def test_latent_projections_without_sex_labels():
    latents = {4: np.random.default_rng(0).normal(size=(12, 3))}
    fig = figures.latent_projections_figure(latents, pd.DataFrame(index=range(12)), "x")
    assert len(fig.axes) == 1
    plt.close(fig)
