"""Learning curves of one dataset × protocol: validation loss per epoch and per optimizer step."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ae_batch.figures.common import batch_size_colours, numeric, save_figure, wants_log


def learning_curves_figure(
    histories: Mapping[tuple[int, int], pd.DataFrame], dataset: str, protocol: str = ""
) -> Figure:
    """``histories`` maps (batch size, seed) to a ``history.csv`` frame (epoch, step, val_loss, ...).

    Colour = batch size; thin lines = seeds, thick line (gid ``bs<B>``) = mean over seeds at each x.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2), sharey=True, layout="constrained")
    colours = batch_size_colours([bs for bs, _ in histories] or [1])
    all_loss = []
    for bs in sorted({bs for bs, _ in histories}):
        runs = [h for (b, _), h in sorted(histories.items()) if b == bs and "val_loss" in h]
        for ax, xcol in zip(axes, ("epoch", "step"), strict=True):
            parts = []
            for h in runs:
                if xcol not in h:
                    continue
                d = pd.DataFrame({"x": numeric(h, xcol), "y": numeric(h, "val_loss")}).dropna()
                d = d[d["x"] > 0]
                ax.plot(d["x"].to_numpy(), d["y"].to_numpy(), color=colours[bs], lw=0.8, alpha=0.45)
                parts.append(d)
                all_loss.append(d["y"].to_numpy())
            if parts:
                mean = pd.concat(parts).groupby("x")["y"].mean()
                ax.plot(mean.index.to_numpy(), mean.to_numpy(), color=colours[bs], lw=2.2, label=f"{bs}",
                        gid=f"bs{bs}")  # fmt: skip
    axes[0].set_xlabel("epoch")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xlabel("optimizer step (log scale)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("validation reconstruction loss")
    if all_loss and wants_log(np.concatenate(all_loss), ratio=5.0):
        axes[0].set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].set_title("per epoch (equal data seen)", fontsize=10)
    axes[1].set_title("per optimizer step (equal updates)", fontsize=10)
    for ax in axes[::-1]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="batch size", fontsize=8, title_fontsize=8)
            break
    where = f"{dataset}, protocol {protocol}" if protocol else dataset
    fig.suptitle(f"{where}: validation loss (thin = seeds, thick = mean over seeds)")
    return fig


def plot_learning_curves(
    histories: Mapping[tuple[int, int], pd.DataFrame], dataset: str, out_path: str | Path, protocol: str = ""
) -> Path:
    return save_figure(learning_curves_figure(histories, dataset, protocol), out_path)
