"""Summary metrics against batch size: one figure per dataset × metric, all protocols on one axes.

Per protocol: the mean over seeds (thick line), a 95% percentile-bootstrap interval of that mean
(shaded; it always lies within the seeds' range, so a loss band never goes below zero) and the single
seeds (points). Dashed horizontal lines are baselines; a vertical line marks the gradient noise scale
measured at initialisation when ``noise_scale.csv`` has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ae_batch.figures.common import (
    axes_in_inches,
    counted_rows,
    dataset_rows,
    figure_name,
    format_number,
    log2_batch_axis,
    numeric,
    protocol_label,
    protocol_rows,
    protocol_styles,
    protocols_of,
    save_figure,
    wants_log,
    wrap,
)

BASELINE_COLOURS = ("dimgray", "tab:brown", "tab:pink", "tab:olive", "tab:gray")
N_BOOT, CI_LEVEL, BOOT_SEED = 2000, 0.95, 0
CI_LABEL = "shaded: 95% bootstrap CI over seeds"
FIGSIZE, LEGEND_STRIP = (9.0, 4.6), 3.15  # inches; the legend sits in a fixed strip right of the axes


class MetricLabel(NamedTuple):
    name: str
    direction: str  # "" for descriptive quantities


# Summary columns plotted against batch size (in this order), with their human labels.
METRICS: dict[str, MetricLabel] = {
    "test_recon_loss": MetricLabel("Test reconstruction loss", "lower is better"),
    "val_recon_loss": MetricLabel("Validation reconstruction loss", "lower is better"),
    "sex_auroc_mean": MetricLabel("Sex AUROC from latents (CV mean)", "higher is better"),
    "laterality_r2_mean": MetricLabel("Laterality R² from latents (CV mean)", "higher is better"),
    "laterality_mae_mean": MetricLabel("Laterality MAE from latents (CV mean)", "lower is better"),
    "laterality_spearman_mean": MetricLabel(
        "Laterality Spearman ρ from latents (CV mean)", "higher is better"
    ),
    "latent_effective_rank": MetricLabel("Latent effective rank", "higher = more diverse"),
    "latent_participation_ratio": MetricLabel("Latent participation ratio", "higher = more diverse"),
    "latent_mean_abs_cosine": MetricLabel("Mean |cosine| between subjects' latents", "lower = more diverse"),
    "latent_dead_units": MetricLabel("Dead latent units", "lower is better"),
    "codebook_perplexity": MetricLabel("Codebook perplexity", "higher = more codes used"),
    "codebook_usage": MetricLabel("Fraction of codebook entries used", "higher is better"),
    "codebook_dead_codes": MetricLabel("Dead codebook entries", "lower is better"),
    "codebook_mean_cosine": MetricLabel("Mean cosine between codebook entries", "lower = more diverse"),
    "gradient_noise_scale": MetricLabel("Gradient noise scale at the trained weights", ""),
    "best_epoch": MetricLabel("Best (checkpointed) epoch", ""),
    "steps": MetricLabel("Optimizer steps", ""),
    "samples_seen": MetricLabel("Training samples seen", ""),
    "train_seconds": MetricLabel("Training time (s)", "lower is faster"),
    "samples_per_second": MetricLabel("Throughput (samples/s)", "higher is faster"),
}


def metric_axis_label(metric: str) -> str:
    label = METRICS.get(metric, MetricLabel(metric.replace("_", " "), ""))
    return f"{label.name}\n({label.direction})" if label.direction else label.name


def applicable_metrics(summary: pd.DataFrame, dataset: str) -> list[str]:
    """The ``METRICS`` in ``summary`` with at least one finite value for ``dataset`` (counted rows)."""
    rows = counted_rows(dataset_rows(summary, dataset))
    return [m for m in METRICS if m in rows and numeric(rows, m).notna().any()]


def bootstrap_ci(
    values: np.ndarray, n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = BOOT_SEED
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (NaN, NaN with fewer than 2 finite values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.clip(np.quantile(means, [alpha, 1 - alpha]), v.min(), v.max())  # clip: rounding only
    return float(low), float(high)


def seed_summary(
    summary: pd.DataFrame, dataset: str, metric: str, protocol: str | None = None
) -> pd.DataFrame:
    """Per batch size: n seeds, mean and the 95% bootstrap interval of the mean (NaN when n < 2)."""
    rows = counted_rows(dataset_rows(summary, dataset))
    if protocol is not None:
        rows = protocol_rows(rows, protocol)
    long = pd.DataFrame({"batch_size": numeric(rows, "batch_size"), "value": numeric(rows, metric)}).dropna()
    out = []
    for bs, part in long.groupby(long["batch_size"].astype(int)):
        v = part["value"].to_numpy()
        low, high = bootstrap_ci(v)
        out.append({"batch_size": bs, "n": v.size, "mean": v.mean(), "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["batch_size", "n", "mean", "ci_low", "ci_high"])


def init_noise_scale(noise_scale: pd.DataFrame | None, dataset: str) -> float:
    """Mean over seeds of the gradient noise scale at initialisation (NaN if absent or not positive)."""
    rows = dataset_rows(noise_scale, dataset)
    if rows.empty or "point" not in rows:
        return np.nan
    rows = rows[rows["point"].astype(str) == "init"]
    values = pd.DataFrame({"seed": numeric(rows, "seed"), "g": numeric(rows, "gradient_noise_scale")}).dropna(
        subset=["g"]
    )
    if values.empty:
        return np.nan
    per_seed = values.groupby(values["seed"].fillna(-1))["g"].mean()
    value = float(per_seed.mean())
    return value if np.isfinite(value) and value > 0 else np.nan


def _noise_scale_marker(ax: plt.Axes, value: float, xlim: tuple[float, float]) -> list:
    """Vertical line at the noise scale, or an arrow at the axis edge when it is off the axis."""
    text = f"noise scale ≈ {format_number(value)}"
    trans = ax.get_xaxis_transform()  # x in data units, y in axes units
    if xlim[0] <= value <= xlim[1]:
        ax.axvline(value, color="black", ls=(0, (1, 2)), lw=1.4, gid="noise_scale", zorder=1)
        ax.annotate("noise scale", xy=(value, 0.97), xycoords=trans, rotation=90, ha="right", va="top",
                    fontsize=8, gid="noise_scale_text",
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1})  # fmt: skip
        return [Line2D([], [], color="black", ls=(0, (1, 2)), lw=1.4, label=wrap(f"{text} (at init)"))]
    right = value > xlim[1]
    edge = xlim[1] if right else xlim[0]
    inner = edge / 1.25 if right else edge * 1.25
    ax.annotate(f"{text}\n(off axis)", xy=(edge, 0.9), xytext=(inner, 0.9), xycoords=trans, textcoords=trans,
                ha="right" if right else "left", va="center", fontsize=8, gid="noise_scale_text",
                arrowprops={"arrowstyle": "->", "color": "black"})  # fmt: skip
    side = "right" if right else "left"
    return [
        Line2D([], [], color="black", ls=(0, (1, 2)), lw=1.4, label=f"{text} at init\n(off axis, {side})")
    ]


def metric_figure(
    summary: pd.DataFrame,
    baselines: pd.DataFrame | None,
    dataset: str,
    metric: str,
    noise_scale: pd.DataFrame | None = None,
    protocol_labels: Mapping[str, str] | None = None,
    styles: Mapping[str, dict] | None = None,
) -> Figure:
    """Mean line (gid ``mean:<protocol>``), band (gid ``band:<protocol>``) and seed points (gid
    ``seeds:<protocol>``) per protocol, dashed baselines (gid ``baseline:<representation>``) and the
    initial gradient noise scale (gid ``noise_scale``)."""
    rows = counted_rows(dataset_rows(summary, dataset))
    protocols = protocols_of(rows)
    styles = styles or protocol_styles(protocols)
    fig = plt.figure(figsize=FIGSIZE)
    ax = axes_in_inches(fig, 1.15, 0.65, FIGSIZE[0] - 1.15 - LEGEND_STRIP, FIGSIZE[1] - 0.65 - 0.5)
    handles: list = []
    all_sizes: set[int] = set()
    any_band = any_seed = False
    n_prot = len(protocols)
    for i, protocol in enumerate(protocols):
        style = styles.get(protocol, {"color": "tab:blue", "linestyle": "-", "marker": "o"})
        stats = seed_summary(rows, dataset, metric, protocol)
        if stats.empty:
            continue
        sizes = stats["batch_size"].astype(int).to_numpy()
        all_sizes |= set(sizes.tolist())
        band = stats["ci_low"].notna().to_numpy()
        if band.any():
            any_band = True
            ax.fill_between(sizes, stats["ci_low"].where(band), stats["ci_high"].where(band),
                            color=style["color"], alpha=0.18, lw=0, gid=f"band:{protocol}")  # fmt: skip
        (line,) = ax.plot(sizes, stats["mean"], color=style["color"], ls=style["linestyle"],
                          marker=style["marker"], lw=2.2, ms=6, zorder=3, gid=f"mean:{protocol}",
                          label=wrap(protocol_label(protocol, protocol_labels)))  # fmt: skip
        handles.append(line)
        part = protocol_rows(rows, protocol)
        x, y = numeric(part, "batch_size").to_numpy(), numeric(part, metric).to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            any_seed = True
            nudge = 2 ** (((i - (n_prot - 1) / 2) * 0.06) if n_prot > 1 else 0.0)
            ax.scatter(x[ok] * nudge, y[ok], s=14, color=style["color"], alpha=0.55, lw=0, zorder=4,
                       marker=style["marker"], gid=f"seeds:{protocol}")  # fmt: skip
    if any_band:
        handles.append(Patch(color="gray", alpha=0.3, label=CI_LABEL))
    if any_seed:
        handles.append(
            Line2D([], [], ls="", marker="o", color="gray", alpha=0.6, label="points: single seeds")
        )
    base = dataset_rows(baselines, dataset)
    if metric in base and "representation" in base:
        for j, (rep, value) in enumerate(
            zip(base["representation"].astype(str), numeric(base, metric), strict=True)
        ):
            if np.isfinite(value):
                handles.append(ax.axhline(value, ls="--", lw=1.2, color=BASELINE_COLOURS[j % len(BASELINE_COLOURS)],
                                          label=wrap(f"baseline: {rep}"), gid=f"baseline:{rep}", zorder=2))  # fmt: skip
    if all_sizes:
        xlim = log2_batch_axis(ax, all_sizes)
        value = init_noise_scale(noise_scale, dataset)
        if np.isfinite(value):
            handles += _noise_scale_marker(ax, value, xlim)
    else:
        ax.set_xlabel("batch size (log2 scale)")
    if wants_log(numeric(rows, metric).to_numpy(), ratio=30.0):
        ax.set_yscale("log")
    ax.set_ylabel(metric_axis_label(metric))
    ax.set_title(f"{dataset}: {METRICS.get(metric, MetricLabel(metric, '')).name} vs batch size", loc="left",
                 fontsize=11)  # fmt: skip
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    return fig


def plot_metric_vs_batch_size(
    summary: pd.DataFrame,
    baselines: pd.DataFrame | None,
    dataset: str,
    out_dir: str | Path,
    noise_scale: pd.DataFrame | None = None,
    protocol_labels: Mapping[str, str] | None = None,
    styles: Mapping[str, dict] | None = None,
) -> list[Path]:
    """One PNG per applicable metric: ``<out_dir>/<dataset>__<metric>.png``."""
    out_dir = Path(out_dir)
    return [
        save_figure(
            metric_figure(summary, baselines, dataset, m, noise_scale, protocol_labels, styles),
            out_dir / figure_name(dataset, m),
        )
        for m in applicable_metrics(summary, dataset)
    ]
