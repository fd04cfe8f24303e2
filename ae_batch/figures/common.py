"""Shared figure plumbing: atomic deterministic PNG saving, file names, row selection, colours, axes.

Every figure file is named ``<dataset>__<rest>.png``: the double underscore separates the dataset from
the rest, so ``figure_dataset`` recovers the dataset even when one dataset's name is a prefix of
another's (``mri`` and ``mri_vq``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ae_batch.io import atomic_path  # noqa: E402

DPI = 120
SEP = "__"
KINDS = ("metric_vs_batch_size", "learning_curves", "latent_projections", "recon_loss_distributions")
BS_CMAP = "viridis"
PROTOCOL_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:cyan")
PROTOCOL_LINESTYLES = ("-", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
PROTOCOL_MARKERS = ("o", "s", "^", "D", "v", "P")


# --- saving and naming -------------------------------------------------------------------------------
def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG atomically (temporary file beside ``path``, then rename) and close it.

    No software or time metadata is written, so the same figure always gives the same bytes.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def figure_name(dataset: str, *parts: str) -> str:
    """``<dataset>__<part>__<part>.png``; the dataset must not contain the separator."""
    dataset = str(dataset)
    if SEP in dataset or not dataset:
        raise ValueError(f"dataset name {dataset!r} must be non-empty and must not contain {SEP!r}")
    return SEP.join([dataset, *(str(p) for p in parts)]) + ".png"


def figure_dataset(path: str | Path) -> str:
    """The dataset a figure file belongs to (the part of its name before the first ``__``)."""
    name = Path(path).name
    if SEP not in name:
        raise ValueError(f"{name!r} is not a figure file name of the form <dataset>{SEP}...")
    return name.split(SEP, 1)[0]


# --- tables --------------------------------------------------------------------------------------------
def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]`` as floats (NaN where missing, non-numeric or infinite)."""
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)


def dataset_rows(frame: pd.DataFrame | None, dataset: str) -> pd.DataFrame:
    if frame is None or frame.empty or "dataset" not in frame:
        return pd.DataFrame(columns=["dataset"])
    return frame[frame["dataset"].astype(str) == str(dataset)]


def counted_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The members that statistics and figures use: ``lr_selected`` True or empty (non-tuned).

    For a tuned protocol only the selected learning rate counts; without the column every row counts.
    """
    if summary is None or "lr_selected" not in summary:
        return summary
    raw = summary["lr_selected"]
    text = raw.astype(str).str.strip().str.lower()
    keep = raw.isna() | text.isin(("true", "1", "1.0", "", "nan", "none", "<na>"))
    return summary[keep.to_numpy(bool)]


def protocols_of(frame: pd.DataFrame) -> list[str]:
    if frame is None or frame.empty:
        return []
    if "protocol" not in frame:
        return [""]
    return sorted(frame["protocol"].fillna("").astype(str).unique())


def protocol_rows(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    if "protocol" not in frame:
        return frame
    return frame[frame["protocol"].fillna("").astype(str) == str(protocol)]


# --- styles --------------------------------------------------------------------------------------------
def protocol_styles(protocols: Iterable[str]) -> dict[str, dict]:
    """A colour, line style and marker per protocol (sorted order, so stable across figures)."""
    return {
        p: {
            "color": PROTOCOL_COLOURS[i % len(PROTOCOL_COLOURS)],
            "linestyle": PROTOCOL_LINESTYLES[i % len(PROTOCOL_LINESTYLES)],
            "marker": PROTOCOL_MARKERS[i % len(PROTOCOL_MARKERS)],
        }
        for i, p in enumerate(sorted(set(protocols)))
    }


def protocol_label(protocol: str, labels: Mapping[str, str] | None = None) -> str:
    return str((labels or {}).get(protocol, protocol))


def batch_size_colours(batch_sizes: Iterable[int]) -> dict[int, tuple]:
    """One colour per batch size from a sequential colormap (dark = small, light = large)."""
    sizes = sorted({int(b) for b in batch_sizes})
    cmap = plt.get_cmap(BS_CMAP)
    pos = np.linspace(0.05, 0.85, len(sizes)) if len(sizes) > 1 else [0.45]
    return {b: cmap(float(p)) for b, p in zip(sizes, pos, strict=True)}


# --- layout --------------------------------------------------------------------------------------------
def axes_in_inches(fig: Figure, left: float, bottom: float, width: float, height: float, **kwargs) -> Axes:
    """An axes placed by its margins in inches: a fixed layout, much cheaper than a layout engine."""
    w, h = fig.get_size_inches()
    return fig.add_axes((left / w, bottom / h, width / w, height / h), **kwargs)


def wrap(text: str, width: int = 34) -> str:
    """Wrap a legend label so the legend fits its fixed strip."""
    return "\n".join(textwrap.fill(line, width, break_long_words=False) for line in str(text).split("\n"))


# --- axes and numbers ----------------------------------------------------------------------------------
def log2_batch_axis(ax: Axes, sizes: Iterable[int]) -> tuple[float, float]:
    """Log2 x axis with exactly the batch sizes as ticks; returns the x limits."""
    sizes = sorted({int(b) for b in sizes})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    lim = (min(sizes) / 1.6, max(sizes) * 1.6)
    ax.set_xlim(*lim)
    ax.set_xlabel("batch size (log2 scale)")
    return lim


def wants_log(values: np.ndarray, ratio: float = 10.0) -> bool:
    """All finite values positive and spanning at least ``ratio``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size and (v > 0).all() and v.max() / v.min() >= ratio)


def format_number(x: float) -> str:
    """Short human form: 3 significant digits below 1,000, thousands separators above."""
    if not np.isfinite(x):
        return str(x)
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def format_percent(ratio: float) -> str:
    """An explained-variance share with 2 significant digits: ``45%``, ``4.5%``, ``0.43%``."""
    pct = 100.0 * float(ratio)
    if not np.isfinite(pct) or pct <= 0:
        return "0%"
    if pct < 0.01:
        return "<0.01%"
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.2g}%"
