"""Figures: file naming per dataset, protocol lines, bootstrap bands, noise scale, layouts, determinism.

Tests inspect the figure objects (line data, gids, labels, axis scales) and the saved PNGs (pixel size,
bytes); ``make_study`` writes a synthetic study (summary plus member folders) of any size.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ae_batch import figures
from ae_batch.figures.common import format_percent
from ae_batch.figures.metrics import CI_LABEL, FIGSIZE
from ae_batch.figures.study import member_dirs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BATCH_SIZES = (1, 4, 16)
SEEDS = (0, 1, 2)
N_TEST, N_VAL, LATENT_DIM = 30, 10, 6
PROTOCOLS = {"paper": 0.0, "tuned": 0.05}  # protocol → metric offset
TUNED_LRS = (0.0003, 0.001, 0.003)  # the middle one is selected
LABELS = {"paper": "paper (30 epochs, fixed lr)", "tuned": "tuned (1,000 steps, tuned lr)"}


# --- a synthetic study ---------------------------------------------------------------------------------
def value(protocol: str, bs: int, seed: int) -> float:
    """Deterministic metric of a counted member: protocol offset + log2(batch size) trend + seed offset."""
    return 0.1 + PROTOCOLS.get(protocol, 0.0) + 0.02 * np.log2(bs) + 0.005 * seed


def summary_rows(dataset, protocols, batch_sizes, seeds, all_metrics=False) -> list[dict]:
    rows = []
    for protocol in protocols:
        lrs = TUNED_LRS if protocol == "tuned" else (0.001,)
        for bs in batch_sizes:
            for seed in seeds:
                for lr in lrs:
                    selected = "" if protocol != "tuned" else lr == 0.001
                    v = value(protocol, bs, seed) + (0 if selected in ("", True) else 10.0)
                    row = {
                        "dataset": dataset,
                        "protocol": protocol,
                        "batch_size": bs,
                        "seed": seed,
                        "learning_rate": lr,
                        "lr_selected": selected,
                        "member": f"seed{seed}" if protocol != "tuned" else f"seed{seed}-lr{lr!r}",
                        "steps": 4 * int(np.ceil(100 / bs)),
                        "test_recon_loss": v,
                        "val_recon_loss": v + 0.01,
                        "latent_effective_rank": 6 - np.log2(bs) / 2 + seed,
                        "sex_auroc_mean": 0.7 - 0.01 * np.log2(bs) + 0.02 * seed,
                        "codebook_perplexity": np.nan,
                    }
                    if all_metrics:
                        for i, m in enumerate(figures.METRICS):
                            row.setdefault(m, 1.0 + i + 0.1 * seed + 0.01 * bs)
                        if "vq" not in dataset:
                            row["codebook_perplexity"] = row["codebook_usage"] = np.nan
                    rows.append(row)
    return rows


def make_study(
    root: Path, datasets, protocols=tuple(PROTOCOLS), batch_sizes=BATCH_SIZES, seeds=SEEDS, all_metrics=False
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Write the member folders of every counted row; return (summary as read from CSV, subjects)."""
    rng = np.random.default_rng(0)
    rows = [r for ds in datasets for r in summary_rows(ds, protocols, batch_sizes, seeds, all_metrics)]
    path = root / "summary.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    summary = pd.read_csv(path)  # as the stage reads it: lr_selected True/False/NaN
    ids = [f"s{i:03d}" for i in range(N_VAL + N_TEST)]
    subjects = {}
    for ds in datasets:
        table = pd.DataFrame(
            {"subject_id": ids, "split": ["val"] * N_VAL + ["test"] * N_TEST, "sex": rng.integers(0, 2, 40)}
        ).astype({"sex": float})
        table.loc[N_VAL, "sex"] = np.nan
        if "mri" in ds:
            table["laterality"] = rng.uniform(-1, 1, len(ids))
            table.loc[N_VAL + 1, "laterality"] = np.nan
        subjects[ds] = table
    for row in figures.counted_rows(summary).itertuples():
        member = root / row.dataset / row.protocol / f"bs{row.batch_size}" / row.member
        member.mkdir(parents=True)
        steps_per_epoch = int(np.ceil(100 / row.batch_size))
        epochs = np.arange(1, 5)
        pd.DataFrame(
            {
                "epoch": epochs,
                "step": epochs * steps_per_epoch,
                "samples": epochs * 100,
                "train_loss": 1.0 / epochs,
                "val_loss": 1.0 / epochs + 0.01 * row.seed + 0.001 * row.batch_size,
            }
        ).to_csv(member / "history.csv", index=False)
        np.savez(
            member / "latents.npz",
            val=rng.normal(size=(N_VAL, LATENT_DIM)),
            test=rng.normal(size=(N_TEST, LATENT_DIM)),
            val_ids=np.array(ids[:N_VAL]),
            test_ids=np.array(ids[N_VAL:]),
        )
        pd.DataFrame(
            {
                "subject_id": ids,
                "split": ["val"] * N_VAL + ["test"] * N_TEST,
                "recon_loss": rng.lognormal(np.log(row.test_recon_loss), 1.0, len(ids)),
            }
        ).to_csv(member / "per_subject.csv", index=False)
    return summary, subjects


def baselines_for(datasets) -> pd.DataFrame:
    rows = [
        {"dataset": ds, "representation": rep, "n_features": 32, "sex_auroc_mean": auc, "sex_auroc_std": 0.02}
        for ds in datasets
        for rep, auc in (("raw", 0.65), ("pca32", 0.6))
    ]
    return pd.DataFrame(rows)


def noise_table(dataset: str, init: list[float], trained: float = 999.0) -> pd.DataFrame:
    rows = [
        {"dataset": dataset, "protocol": "", "batch_size": np.nan, "seed": s, "point": "init",
         "gradient_noise_scale": g, "method": "exact"}
        for s, g in enumerate(init)
    ]  # fmt: skip
    rows.append({"dataset": dataset, "protocol": "paper", "batch_size": 4, "seed": 0, "point": "trained",
                 "gradient_noise_scale": trained, "method": "two_batch"})  # fmt: skip
    rows.append({"dataset": "other", "protocol": "", "batch_size": np.nan, "seed": 0, "point": "init",
                 "gradient_noise_scale": 3.0, "method": "exact"})  # fmt: skip
    return pd.DataFrame(rows)


def assert_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    return image


def assert_inside_figure(fig) -> None:
    """The fixed layouts must not clip: every axes' labels, title, tick labels and legend lie inside."""
    renderer = fig.canvas.get_renderer()
    box = fig.bbox.padded(1)
    for ax in fig.axes:
        extent = ax.get_tightbbox(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, (
            ax.get_gid() or ax.get_label(),
            extent,
            box,
        )
    for text in fig.texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1, text.get_text()


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


DATASETS = ("ehr", "mri", "mri_vq")  # "mri" is a prefix of "mri_vq"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    summary, subjects = make_study(root, DATASETS)
    return root, summary, subjects


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- naming and row selection --------------------------------------------------------------------------
def test_figure_names_recover_the_dataset_even_for_prefix_names():
    assert figures.figure_name("mri", "test_recon_loss") == "mri__test_recon_loss.png"
    assert figures.figure_dataset("x/mri__paper__learning_curves.png") == "mri"
    assert figures.figure_dataset(Path("mri_vq__paper__learning_curves.png")) == "mri_vq"
    with pytest.raises(ValueError, match="must not contain"):
        figures.figure_name("a__b", "x")
    with pytest.raises(ValueError):
        figures.figure_dataset("mri_test_recon_loss.png")


def test_counted_rows_keep_selected_and_non_tuned_rows(study):
    _, summary, _ = study
    kept = figures.counted_rows(summary)
    tuned = kept[kept["protocol"] == "tuned"]
    assert set(tuned["learning_rate"]) == {0.001}
    assert len(kept[kept["protocol"] == "paper"]) == len(summary[summary["protocol"] == "paper"])
    assert len(kept) == len(DATASETS) * 2 * len(BATCH_SIZES) * len(SEEDS)
    dirs = member_dirs(
        Path("/s"), kept[(kept["dataset"] == "mri") & (kept["protocol"] == "tuned")], "mri", "tuned"
    )
    assert dirs[(4, 1)] == Path("/s/mri/tuned/bs4/seed1-lr0.001")


# --- metric vs batch size ------------------------------------------------------------------------------
def test_metric_figure_draws_every_protocol_on_one_axes(study):
    _, summary, _ = study
    fig = figures.metric_figure(summary, None, "mri", "test_recon_loss", protocol_labels=LABELS)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    means = {ln.get_gid(): ln for ln in ax.lines if str(ln.get_gid()).startswith("mean:")}
    assert set(means) == {"mean:paper", "mean:tuned"}
    for protocol, line in means.items():
        protocol = protocol.split(":")[1]
        np.testing.assert_array_equal(line.get_xdata(), BATCH_SIZES)
        expected = [np.mean([value(protocol, b, s) for s in SEEDS]) for b in BATCH_SIZES]
        np.testing.assert_allclose(line.get_ydata(), expected)  # tuned: only the selected lr (others +10)
        assert line.get_label() == LABELS[protocol]
    paper, tuned = means["mean:paper"], means["mean:tuned"]
    assert paper.get_color() != tuned.get_color() and paper.get_linestyle() != tuned.get_linestyle()
    seeds = {c.get_gid(): c for c in ax.collections if str(c.get_gid()).startswith("seeds:")}
    assert {k: len(c.get_offsets()) for k, c in seeds.items()} == {
        "seeds:paper": len(BATCH_SIZES) * len(SEEDS),
        "seeds:tuned": len(BATCH_SIZES) * len(SEEDS),
    }
    assert max(c.get_offsets()[:, 1].max() for c in seeds.values()) < 1, "non-selected lr rows plotted"
    texts = legend_texts(ax)
    assert LABELS["paper"] in texts and LABELS["tuned"] in texts
    # log2 x axis with exactly the batch sizes as ticks
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    np.testing.assert_array_equal(ax.get_xticks(), BATCH_SIZES)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(b) for b in BATCH_SIZES]
    assert ax.get_xlabel() == "batch size (log2 scale)"


@pytest.mark.parametrize(
    ("metric", "label", "hint"),
    [
        ("sex_auroc_mean", "Sex AUROC from latents (CV mean)", "higher is better"),
        ("test_recon_loss", "Test reconstruction loss", "lower is better"),
        ("latent_effective_rank", "Latent effective rank", "higher = more diverse"),
    ],
)
def test_metric_titles_and_axis_labels_are_human(study, metric, label, hint):
    _, summary, _ = study
    ax = figures.metric_figure(summary, None, "ehr", metric).axes[0]
    assert ax.get_ylabel() == f"{label}\n({hint})"
    assert ax.get_title(loc="left") == f"ehr: {label} vs batch size"
    for text in (ax.get_ylabel(), ax.get_title(loc="left"), ax.get_xlabel()):
        assert metric not in text and "_mean" not in text
    for m, lab in figures.METRICS.items():
        assert "_" not in lab.name and (m not in lab.name or "_" not in m)


def test_bootstrap_ci_stays_within_the_seed_range_and_is_seeded():
    losses = np.array([0.001, 0.002, 0.05])  # skewed and near zero: the t band goes below zero
    sd = losses.std(ddof=1)
    assert losses.mean() - sps.t.ppf(0.975, 2) * sd / np.sqrt(3) < 0
    low, high = figures.bootstrap_ci(losses)
    assert losses.min() <= low < losses.mean() < high <= losses.max()
    assert figures.bootstrap_ci(losses) == (low, high), "seeded: same interval every call"
    assert figures.bootstrap_ci(np.array([0.3, 0.5])) == (0.3, 0.5)
    assert np.isnan(figures.bootstrap_ci(np.array([0.4, np.nan]))).all(), "fewer than 2 seeds: no interval"
    rng = np.random.default_rng(1)
    many = rng.normal(1.0, 0.1, 200)
    low, high = figures.bootstrap_ci(many)
    assert high - low == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(200), rel=0.2)


def test_band_within_the_seed_range_labelled_and_absent_for_one_seed(study):
    _, summary, _ = study
    ax = figures.metric_figure(summary, None, "ehr", "test_recon_loss").axes[0]
    (band,) = [c for c in ax.collections if c.get_gid() == "band:paper"]
    y = band.get_paths()[0].vertices[:, 1]
    lo = min(value("paper", b, s) for b in BATCH_SIZES for s in SEEDS)
    hi = max(value("paper", b, s) for b in BATCH_SIZES for s in SEEDS)
    assert lo - 1e-12 <= y.min() and y.max() <= hi + 1e-12
    assert CI_LABEL in legend_texts(ax) and "95% bootstrap CI over seeds" in CI_LABEL
    one = summary[summary["seed"] == 0]
    ax = figures.metric_figure(one, None, "ehr", "test_recon_loss").axes[0]
    assert not [c for c in ax.collections if str(c.get_gid()).startswith("band:")]
    assert CI_LABEL not in legend_texts(ax)


def test_noise_scale_line_at_the_mean_over_seeds_at_init(study):
    _, summary, _ = study
    noise = noise_table("ehr", [3.0, 5.0, 7.0])
    ax = figures.metric_figure(summary, None, "ehr", "test_recon_loss", noise_scale=noise).axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "noise_scale"]
    assert list(line.get_xdata()) == [5.0, 5.0]  # mean of the init rows; trained and other datasets ignored
    (text,) = [t for t in ax.texts if t.get_gid() == "noise_scale_text"]
    assert text.get_text() == "noise scale"
    assert "noise scale ≈ 5 (at init)" in legend_texts(ax)
    for bad in ([-1.0, -2.0], [np.nan, np.nan], [0.0]):
        ax = figures.metric_figure(
            summary, None, "ehr", "test_recon_loss", noise_scale=noise_table("ehr", bad)
        )
        assert not [a for a in ax.axes[0].get_children() if str(a.get_gid()).startswith("noise_scale")]


def test_noise_scale_off_the_axis_is_shown_at_the_edge(study):
    _, summary, _ = study
    ax = figures.metric_figure(summary, None, "ehr", "test_recon_loss", noise_table("ehr", [5000.0])).axes[0]
    assert ax.get_xlim() == pytest.approx((1 / 1.6, 16 * 1.6)), "the axis is not stretched"
    assert not [ln for ln in ax.lines if ln.get_gid() == "noise_scale"]
    (text,) = [t for t in ax.texts if t.get_gid() == "noise_scale_text"]
    assert text.get_text() == "noise scale ≈ 5,000\n(off axis)" and text.arrow_patch is not None
    assert text.xy[0] == pytest.approx(16 * 1.6), "arrow at the right edge"
    assert "noise scale ≈ 5,000 at init\n(off axis, right)" in legend_texts(ax)
    ax = figures.metric_figure(summary, None, "ehr", "test_recon_loss", noise_table("ehr", [0.1])).axes[0]
    assert "off axis, left" in legend_texts(ax)[-1]


def test_baselines_are_dashed_lines_where_the_metric_exists(study):
    _, summary, _ = study
    baselines = baselines_for(DATASETS)
    ax = figures.metric_figure(summary, baselines, "ehr", "sex_auroc_mean").axes[0]
    lines = {ln.get_gid(): ln for ln in ax.lines if str(ln.get_gid()).startswith("baseline:")}
    assert set(lines) == {"baseline:raw", "baseline:pca32"}
    assert lines["baseline:raw"].get_linestyle() == "--"
    assert list(lines["baseline:raw"].get_ydata()) == [0.65, 0.65]
    assert "baseline: pca32" in legend_texts(ax)
    ax = figures.metric_figure(summary, baselines, "ehr", "latent_effective_rank").axes[0]
    assert not [ln for ln in ax.lines if str(ln.get_gid()).startswith("baseline")]


@pytest.mark.parametrize("metric", ["laterality_spearman_mean", "steps", "samples_per_second"])
def test_fixed_metric_layout_does_not_clip_long_labels(tmp_path, metric):
    name = "mri_synthetic_vq"
    summary, _ = make_study(
        tmp_path, (name,), batch_sizes=(1, 4, 16, 32, 64, 100), seeds=(0, 1), all_metrics=True
    )
    summary["samples_per_second"] = 12345.678 * summary["batch_size"]
    labels = {"paper": "paper protocol: 30 epochs at every batch size, fixed learning rate", "tuned": "tuned"}
    base = baselines_for((name,)).assign(**{metric: 0.5})
    fig = figures.metric_figure(summary, base, name, metric, noise_table(name, [2e5]), labels)
    assert_inside_figure(fig)
    assert any("\n" in t for t in legend_texts(fig.axes[0])), "long labels are wrapped"


def test_one_png_per_applicable_metric(tmp_path, study):
    _, summary, _ = study
    paths = figures.plot_metric_vs_batch_size(summary, None, "mri", tmp_path)
    expected = ["test_recon_loss", "val_recon_loss", "sex_auroc_mean", "latent_effective_rank", "steps"]
    assert [p.name for p in paths] == [f"mri__{m}.png" for m in expected]  # METRICS order; codebook all-NaN
    for p in paths:
        image = assert_png(p)
        assert image.shape[:2] == (round(FIGSIZE[1] * 120), round(FIGSIZE[0] * 120))
    assert not list(tmp_path.glob(".*"))


# --- learning curves, projections, losses ---------------------------------------------------------------
def test_learning_curves_colour_by_batch_size_and_name_the_protocol(study):
    root, _, _ = study
    histories = {
        (bs, s): pd.read_csv(root / "ehr" / "paper" / f"bs{bs}" / f"seed{s}" / "history.csv")
        for bs in BATCH_SIZES
        for s in SEEDS
    }
    fig = figures.learning_curves_figure(histories, "ehr", LABELS["paper"])
    assert LABELS["paper"] in fig.get_suptitle() and fig.get_suptitle().startswith("ehr")
    by_epoch, by_step = fig.axes[:2]
    assert by_step.get_xscale() == "log" and by_epoch.get_xscale() == "linear"
    assert by_epoch.get_xlabel() == "epoch" and by_step.get_xlabel() == "optimizer step (log scale)"
    means = {ln.get_gid(): ln for ln in by_epoch.lines if ln.get_gid()}
    assert set(means) == {f"bs{b}" for b in BATCH_SIZES}
    assert len({ln.get_color() for ln in means.values()}) == len(BATCH_SIZES)
    for bs in BATCH_SIZES:
        colour = means[f"bs{bs}"].get_color()
        thin = [ln for ln in by_epoch.lines if not ln.get_gid() and ln.get_color() == colour]
        assert len(thin) == len(SEEDS) and all(
            ln.get_linewidth() < means[f"bs{bs}"].get_linewidth() for ln in thin
        )
        np.testing.assert_allclose(means[f"bs{bs}"].get_ydata(), 1.0 / np.arange(1, 5) + 0.01 + 0.001 * bs)
    step_mean = {ln.get_gid(): ln for ln in by_step.lines if ln.get_gid()}["bs4"]
    np.testing.assert_array_equal(step_mean.get_xdata(), np.arange(1, 5) * 25)
    assert [t.get_text() for t in by_step.get_legend().get_texts()] == [str(b) for b in BATCH_SIZES]


def test_format_percent_keeps_two_significant_digits():
    assert [format_percent(r) for r in (0.45, 0.045, 0.0043, 0.00004, 0.0, 1.0)] == [
        "45%", "4.5%", "0.43%", "<0.01%", "0%", "100%"
    ]  # fmt: skip


def test_latent_projections_wrap_rows_and_label_the_variance(tmp_path, study):
    _, _, subjects = study
    labels = subjects["mri"].query("split == 'test'").reset_index(drop=True)
    rng = np.random.default_rng(1)
    sizes = (1, 4, 16, 32, 64, 100)
    scale = np.array([10.0, 0.7, 0.1, 0.05, 0.05, 0.05])  # PC2 explains well under 1% of the variance
    latents = {bs: rng.normal(size=(N_TEST, LATENT_DIM)) * scale for bs in sizes}
    fig = figures.latent_projections_figure(
        latents, labels, "mri", {0: "F", 1: "M"}, protocol=LABELS["paper"]
    )
    panels = {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}
    assert set(panels) == {f"{kind}:bs{b}" for kind in ("sex", "laterality") for b in sizes}
    assert len({round(ax.get_position().x0, 3) for ax in panels.values()}) == 3, "at most 3 columns"
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
    ratio = figures.pca_2d(latents[16])[1]
    ax = panels["sex:bs16"]
    assert ax.get_ylabel() == f"PC2 ({format_percent(ratio[1])})"
    assert re.fullmatch(r"PC2 \(0\.\d+%\)", ax.get_ylabel()), ax.get_ylabel()
    assert re.fullmatch(r"PC1 \(\d+% of variance\)", ax.get_xlabel())
    assert ax.get_title() == "batch size 16: sex"
    assert {t.get_text() for t in panels["sex:bs1"].get_legend().get_texts()} == {"F", "M", "sex unknown"}
    assert LABELS["paper"] in fig.get_suptitle()
    assert_inside_figure(fig)
    path = figures.plot_latent_projections(latents, labels, "mri", tmp_path / "p.png")
    image = assert_png(path)
    assert image.shape[1] <= 1400, f"{image.shape[1]} px wide"
    fig = figures.latent_projections_figure(latents, labels.drop(columns="laterality"), "mri")
    assert len(fig.axes) == len(sizes)
    with pytest.raises(ValueError, match="label rows"):
        figures.latent_projections_figure(latents, labels.iloc[:5], "mri")


def test_latent_projections_without_labels_wrap_into_rows():
    latents = {b: np.random.default_rng(0).normal(size=(12, 3)) for b in (2, 8, 32, 64)}
    fig = figures.latent_projections_figure(latents, pd.DataFrame(index=range(12)), "x")
    assert [ax.get_gid() for ax in fig.axes] == ["sex:bs2", "sex:bs8", "sex:bs32", "sex:bs64"]
    rows = sorted({round(ax.get_position().y0, 3) for ax in fig.axes})
    assert len(rows) == 2 and fig.axes[3].get_position().x0 == pytest.approx(fig.axes[0].get_position().x0)
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"sex unknown"}


def test_pca_2d_orders_components_and_is_deterministic():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4)) * np.array([5.0, 2.0, 0.5, 0.1])
    xy, ratio = figures.pca_2d(z)
    assert xy.shape == (50, 2) and ratio[0] > ratio[1] > 0 and ratio.sum() <= 1
    assert xy[:, 0].var() > xy[:, 1].var()
    np.testing.assert_allclose(figures.pca_2d(z)[0], xy)
    np.testing.assert_allclose(figures.pca_2d(z[:, :1])[0][:, 1], 0)  # 1-d latents: PC2 is zero
    assert figures.pca_2d(z[:1])[0].shape == (1, 2)


def test_recon_loss_boxes_and_log_axis_only_when_spread():
    spread = {1: np.array([0.001, 0.01, 0.1, 1.0]), 4: np.array([0.5, 0.6])}
    ax = figures.recon_loss_figure(spread, "x", "paper").axes[0]
    assert ax.get_yscale() == "log" and ax.get_title().startswith("x, protocol paper:")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1\n(n=4)", "4\n(n=2)"]
    points = {c.get_gid(): c for c in ax.collections if c.get_gid()}
    np.testing.assert_array_equal(np.sort(points["subjects:bs1"].get_offsets()[:, 1]), spread[1])
    narrow = {1: np.array([0.5, 0.6, 0.7]), 4: np.array([-0.1, 0.6, np.nan])}
    assert figures.recon_loss_figure(narrow, "x").axes[0].get_yscale() == "linear"


def test_plot_reconstructions_labels_subjects_by_position(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 1, 8, 10, 6))
    fig = figures.reconstructions_figure(x, x * 0.5, "mri: batch size 4")
    assert len(fig.axes) == figures.N_SUBJECTS * 6
    assert [fig.axes[6 * i].get_ylabel() for i in range(4)] == [f"test subject {i}" for i in range(1, 5)]
    assert (
        fig.axes[0].get_title() == "axial\noriginal" and fig.axes[5].get_title() == "sagittal\nreconstruction"
    )
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), x[0, 0, :, :, 3].T * 0.5)
    path = figures.plot_reconstructions(x, x, "mri: batch size 4", tmp_path / "r.png")
    image = plt.imread(path)
    assert image.shape[:2] == (round((2.1 * 4 + 0.4) * 100), 1200)


# --- the entry point ------------------------------------------------------------------------------------
def test_make_study_figures_writes_every_kind_per_dataset_and_protocol(tmp_path):
    summary, subjects = make_study(tmp_path, DATASETS, batch_sizes=(2, 8), seeds=(0, 1))
    few = summary.drop(columns=["val_recon_loss", "latent_effective_rank", "steps", "sex_auroc_mean"])
    made = figures.make_study_figures(tmp_path, few, baselines_for(DATASETS), None, subjects,
                                      {"mri": {0: "F", 1: "M"}}, protocol_labels=LABELS)  # fmt: skip
    assert set(made) == set(figures.KINDS)
    assert [p.name for p in made["metric_vs_batch_size"]] == [f"{ds}__test_recon_loss.png" for ds in DATASETS]
    for kind in ("learning_curves", "latent_projections", "recon_loss_distributions"):
        assert [p.name for p in made[kind]] == [
            f"{ds}__{p}__{kind}.png" for ds in DATASETS for p in PROTOCOLS
        ]
    for kind, paths in made.items():
        for p in paths:
            assert p.parent == tmp_path / "figures" / kind
            assert_png(p)
        assert not list((tmp_path / "figures" / kind).glob(".*")), "temporary files left behind"
    by_dataset = {
        ds: [p for ps in made.values() for p in ps if figures.figure_dataset(p) == ds] for ds in DATASETS
    }
    assert {ds: len(ps) for ds, ps in by_dataset.items()} == {ds: 1 + 3 * 2 for ds in DATASETS}
    assert all(not p.name.startswith("mri_vq") for p in by_dataset["mri"])


def test_make_study_figures_pngs_are_deterministic(tmp_path):
    summary, subjects = make_study(tmp_path, ("ehr",), protocols=("paper",), batch_sizes=(2, 8), seeds=(0, 1))
    noise = noise_table("ehr", [4.0])
    first = figures.make_study_figures(tmp_path, summary, None, noise, subjects)
    data = {p: p.read_bytes() for ps in first.values() for p in ps}
    second = figures.make_study_figures(tmp_path, summary, None, noise, subjects)
    assert {p: p.read_bytes() for ps in second.values() for p in ps} == data
    for blob in data.values():
        assert b"tIME" not in blob and b"Software" not in blob and b"matplotlib" not in blob


def test_make_study_figures_is_robust(tmp_path):
    # "single": one batch size and seed, no latents file, history without a step column, no subjects table
    # "other": two batch sizes, one member folder missing entirely, no protocol column at all
    summary, subjects = make_study(tmp_path, ("single",), protocols=("paper",), batch_sizes=(8,), seeds=(3,))
    member = tmp_path / "single" / "paper" / "bs8" / "seed3"
    (member / "latents.npz").unlink()
    pd.read_csv(member / "history.csv").drop(columns="step").to_csv(member / "history.csv", index=False)
    other = pd.DataFrame(
        {"dataset": "other", "batch_size": [2, 32], "seed": 0, "test_recon_loss": [0.2, 0.3]}
    )
    (tmp_path / "other" / "bs2" / "seed0").mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2], "step": [5, 10], "val_loss": [1.0, 0.5]}).to_csv(
        tmp_path / "other" / "bs2" / "seed0" / "history.csv", index=False
    )
    thin = pd.concat([summary, other], ignore_index=True)[
        ["dataset", "protocol", "batch_size", "seed", "lr_selected", "member", "test_recon_loss"]
    ].assign(codebook_usage=np.nan, sex_auroc_mean=pd.Series([pd.NA] * 3, dtype=object))
    made = figures.make_study_figures(tmp_path, thin, None, None, {})
    assert [p.name for p in made["metric_vs_batch_size"]] == [
        "other__test_recon_loss.png",
        "single__test_recon_loss.png",
    ]
    assert [p.name for p in made["learning_curves"]] == [
        "other__learning_curves.png",
        "single__paper__learning_curves.png",
    ]
    assert made["latent_projections"] == []
    assert [p.name for p in made["recon_loss_distributions"]] == [
        "single__paper__recon_loss_distributions.png"
    ]
    for paths in made.values():
        for p in paths:
            assert_png(p)
    empty = figures.make_study_figures(tmp_path / "empty", thin.iloc[:0], None, None, {})
    assert empty == {k: [] for k in figures.KINDS}
    assert all((tmp_path / "empty" / "figures" / k).is_dir() for k in figures.KINDS)
