"""Per-subject test reconstruction loss of one dataset × protocol: one box per batch size."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ae_batch.figures.common import batch_size_colours, save_figure, wants_log


def recon_loss_figure(
    per_subject_by_bs: Mapping[int, np.ndarray], dataset: str, protocol: str = ""
) -> Figure:
    """Box plot (mean = white triangle) plus jittered subjects (gid ``subjects:bs<B>``); log y when the
    losses are positive and span a factor of ten or more."""
    sizes = sorted(per_subject_by_bs)
    data = [np.asarray(per_subject_by_bs[b], dtype=float) for b in sizes]
    data = [d[np.isfinite(d)] for d in data]
    colours = batch_size_colours(sizes or [1])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(sizes) + 2.5), 4.0), layout="constrained")
    rng = np.random.default_rng(0)
    for i, (bs, d) in enumerate(zip(sizes, data, strict=True)):
        ax.scatter(i + rng.uniform(-0.18, 0.18, d.size), d, s=5, color=colours[bs], alpha=0.35, lw=0,
                   gid=f"subjects:bs{bs}")  # fmt: skip
    if any(d.size for d in data):
        ax.boxplot(data, positions=range(len(sizes)), widths=0.55, showmeans=True, showfliers=False,
                   medianprops={"color": "black"}, meanprops={"marker": "^", "markerfacecolor": "white",
                   "markeredgecolor": "black"})  # fmt: skip
    ax.set_xticks(range(len(sizes)), [f"{b}\n(n={d.size})" for b, d in zip(sizes, data, strict=True)])
    if data and wants_log(np.concatenate(data)):
        ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("per-subject test reconstruction loss\n(lower is better)")
    where = f"{dataset}, protocol {protocol}" if protocol else dataset
    ax.set_title(f"{where}: per-subject test reconstruction loss (first seed)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_recon_loss_distributions(
    per_subject_by_bs: Mapping[int, np.ndarray], dataset: str, out_path: str | Path, protocol: str = ""
) -> Path:
    return save_figure(recon_loss_figure(per_subject_by_bs, dataset, protocol), out_path)
