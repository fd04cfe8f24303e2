"""PCA of the test latents, one panel per batch size, wrapped into rows of at most ``MAX_COLUMNS``.

Each batch size gets a panel coloured by sex and, when any subject has a laterality label, a panel
below it coloured by laterality. Axis labels give each component's share of the latent variance with
two significant digits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ae_batch.figures.common import axes_in_inches, format_percent, numeric, save_figure

MAX_COLUMNS = 3
PANEL_INCHES = (3.2, 2.9)  # one cell per panel; the axes sit inside it with these pads:
PANEL_PADS = (0.75, 0.2, 0.55, 0.35)  # left, right, bottom, top (inches)
TITLE_STRIP, COLORBAR_STRIP = 0.55, 1.1
LATERALITY_CMAP = "coolwarm"
SEX_COLOURS = ("tab:orange", "tab:blue")


def pca_2d(latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components (sign fixed: largest loading positive) and explained ratios."""
    x = np.asarray(latents, dtype=np.float64).reshape(len(latents), -1)
    coords, ratio = np.zeros((len(x), 2)), np.zeros(2)
    if len(x) < 2 or x.shape[1] == 0:
        return coords, ratio
    x = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(2, len(s))
    signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    signs[signs == 0] = 1
    coords[:, :k] = u[:, :k] * s[:k] * signs
    total = (s**2).sum()
    if total > 0:
        ratio[:k] = s[:k] ** 2 / total
    return coords, ratio


def latent_projections_figure(
    latents_by_bs: Mapping[int, np.ndarray],
    labels: pd.DataFrame,
    dataset: str,
    sex_names: Mapping[int, str] | None = None,
    protocol: str = "",
    max_columns: int = MAX_COLUMNS,
) -> Figure:
    """``labels`` is row-aligned with every latent array (same test subjects, same order).

    Panels carry gids ``sex:bs<B>`` and ``laterality:bs<B>``.
    """
    sizes = sorted(latents_by_bs)
    lat = numeric(labels, "laterality").to_numpy()
    per_bs = 2 if np.isfinite(lat).any() else 1
    n_cols = max(1, min(max_columns, len(sizes)))
    n_rows = max(1, -(-len(sizes) // n_cols)) * per_bs
    (cell_w, cell_h), (pad_l, pad_r, pad_b, pad_t) = PANEL_INCHES, PANEL_PADS
    width = cell_w * n_cols + (COLORBAR_STRIP if per_bs == 2 else 0.0)
    height = TITLE_STRIP + cell_h * n_rows + 0.1
    fig = plt.figure(figsize=(width, height))

    def panel(row: int, col: int, gid: str) -> plt.Axes:
        bottom = height - TITLE_STRIP - (row + 1) * cell_h + pad_b
        return axes_in_inches(fig, col * cell_w + pad_l, bottom, cell_w - pad_l - pad_r, cell_h - pad_b - pad_t,
                              gid=gid)  # fmt: skip

    sex = numeric(labels, "sex").to_numpy()
    names = {0: "sex 0", 1: "sex 1"} | {int(k): str(v) for k, v in (sex_names or {}).items()}
    vmax = float(np.nanmax(np.abs(lat))) if per_bs == 2 else 1.0
    vmax = vmax if vmax > 0 else 1.0
    scatter, first = None, None
    for i, bs in enumerate(sizes):
        z = np.asarray(latents_by_bs[bs])
        if len(z) != len(labels):
            raise ValueError(f"batch size {bs}: {len(z)} latent rows but {len(labels)} label rows")
        xy, ratio = pca_2d(z)
        row, col = (i // n_cols) * per_bs, i % n_cols
        ax = panel(row, col, f"sex:bs{bs}")
        first = first or ax
        unknown = ~np.isin(sex, (0, 1))
        if unknown.any():
            ax.scatter(*xy[unknown].T, s=9, color="lightgray", label="sex unknown")
        for code, colour in enumerate(SEX_COLOURS):
            m = sex == code
            if m.any():
                ax.scatter(*xy[m].T, s=9, color=colour, alpha=0.75, label=names[code])
        ax.set_title(f"batch size {bs}" + (": sex" if per_bs == 2 else ""), fontsize=10)
        panels = [ax]
        if per_bs == 2:
            ax2, ok = panel(row + 1, col, f"laterality:bs{bs}"), np.isfinite(lat)
            ax2.scatter(*xy[~ok].T, s=7, color="lightgray")
            scatter = ax2.scatter(*xy[ok].T, c=lat[ok], s=9, cmap=LATERALITY_CMAP, vmin=-vmax, vmax=vmax)
            ax2.set_title(f"batch size {bs}: laterality", fontsize=10)
            panels.append(ax2)
        for ax_ in panels:
            ax_.set_xlabel(f"PC1 ({format_percent(ratio[0])} of variance)", fontsize=9)
            ax_.set_ylabel(f"PC2 ({format_percent(ratio[1])})", fontsize=9)
            ax_.tick_params(labelsize=8)
    if first is not None and first.get_legend_handles_labels()[0]:
        first.legend(fontsize=8, markerscale=1.5, loc="best")
    if scatter is not None:
        bar_h = min(3.0, height - TITLE_STRIP - 0.6)
        cax = axes_in_inches(fig, width - COLORBAR_STRIP + 0.2, (height - TITLE_STRIP - bar_h) / 2, 0.18, bar_h,
                             label="<colorbar>")  # fmt: skip
        fig.colorbar(scatter, cax=cax, label="laterality (+1 = left, −1 = right)")
    where = f"{dataset}, protocol {protocol}" if protocol else dataset
    fig.suptitle(f"{where}: PCA of test latents (fitted per batch size, first seed)", fontsize=11,
                 y=1 - 0.12 / height, va="top")  # fmt: skip
    return fig


def plot_latent_projections(
    latents_by_bs: Mapping[int, np.ndarray],
    labels: pd.DataFrame,
    dataset: str,
    out_path: str | Path,
    sex_names: Mapping[int, str] | None = None,
    protocol: str = "",
) -> Path:
    return save_figure(
        latent_projections_figure(latents_by_bs, labels, dataset, sex_names, protocol), out_path
    )
