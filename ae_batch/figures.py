"""Figures for the report and MLflow: metrics vs batch size, learning curves, latent PCA, per-subject losses.

Every ``*_figure`` function builds and returns a matplotlib ``Figure`` (tests inspect it); every ``plot_*``
function builds one, writes it as a PNG atomically (temporary file in the same folder, then rename) and
closes it. ``make_study_figures`` reads the per-grid-point files of a study and writes them all.

The 95% band on metric-vs-batch-size plots is a Student-t interval over seeds:
``mean ± t(0.975, n-1) · sd / sqrt(n)`` (no band where only one seed has a value).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats as sps  # noqa: E402

from ae_batch.io import atomic_path, read_json  # noqa: E402

log = logging.getLogger(__name__)

DPI = 120
BS_CMAP = "viridis"
LATERALITY_CMAP = "coolwarm"
SEX_COLOURS = ("tab:orange", "tab:blue")
BASELINE_COLOURS = ("dimgray", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
# Summary columns plotted against batch size (in this order) and their axis labels.
METRICS: dict[str, str] = {
    "test_recon_loss": "test reconstruction loss (lower = better)",
    "val_recon_loss": "validation reconstruction loss (lower = better)",
    "latent_effective_rank": "latent effective rank (higher = more diverse)",
    "latent_participation_ratio": "latent participation ratio (higher = more diverse)",
    "latent_mean_abs_cosine": "mean |cosine| between subjects (lower = more diverse)",
    "sex_auroc_mean": "sex AUROC from latents (CV mean)",
    "laterality_mae_mean": "laterality MAE (lower = better)",
    "laterality_r2_mean": "laterality R² (higher = better)",
    "laterality_spearman_mean": "laterality Spearman ρ (higher = better)",
    "codebook_perplexity": "codebook perplexity (higher = more codes used)",
    "codebook_usage": "fraction of codes used",
    "codebook_dead_codes": "dead codes (lower = better)",
    "codebook_mean_cosine": "mean cosine between codes (lower = more diverse)",
    "best_epoch": "best (checkpointed) epoch",
    "steps": "optimizer steps",
    "train_seconds": "training time (s)",
    "samples_per_second": "throughput (samples/s)",
}
KINDS = ("metric_vs_batch_size", "learning_curves", "latent_projections", "recon_loss_distributions")


# --- helpers ----------------------------------------------------------------------------------------
def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)


def _dataset_rows(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    if frame is None or frame.empty or "dataset" not in frame:
        return pd.DataFrame(columns=["dataset"])
    return frame[frame["dataset"].astype(str) == str(dataset)]


def batch_size_colours(batch_sizes: list[int] | np.ndarray) -> dict[int, tuple]:
    """One colour per batch size from a sequential colormap (dark = small, light = large)."""
    sizes = sorted({int(b) for b in batch_sizes})
    cmap = plt.get_cmap(BS_CMAP)
    pos = np.linspace(0.05, 0.85, len(sizes)) if len(sizes) > 1 else [0.45]
    return {b: cmap(float(p)) for b, p in zip(sizes, pos, strict=True)}


def _log2_x(ax: plt.Axes, sizes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)


def _wants_log(values: np.ndarray, ratio: float = 10.0) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size and (v > 0).all() and v.max() / v.min() >= ratio)


def applicable_metrics(summary: pd.DataFrame, dataset: str) -> list[str]:
    """The ``METRICS`` present in ``summary`` with at least one finite value for ``dataset``."""
    rows = _dataset_rows(summary, dataset)
    return [m for m in METRICS if m in rows and _numeric(rows, m).notna().any()]


def seed_summary(summary: pd.DataFrame, dataset: str, metric: str) -> pd.DataFrame:
    """Per batch size: n seeds, mean, sd and the 95% t-interval (NaN bounds when n < 2)."""
    rows = _dataset_rows(summary, dataset)
    long = pd.DataFrame({"batch_size": _numeric(rows, "batch_size"), "value": _numeric(rows, metric)})
    long = long.dropna()
    g = long.groupby(long["batch_size"].astype(int))["value"]
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "sd": g.std(ddof=1)})
    n = out["n"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(n > 1, sps.t.ppf(0.975, np.maximum(n - 1, 1)) * out["sd"] / np.sqrt(n), np.nan)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out.rename_axis("batch_size").reset_index()


# --- metric vs batch size ---------------------------------------------------------------------------
def metric_figure(summary: pd.DataFrame, baselines: pd.DataFrame | None, dataset: str, metric: str) -> Figure:
    """Mean over seeds (line, gid ``"mean"``) with 95% t-band, seed points, dashed baselines."""
    rows = _dataset_rows(summary, dataset)
    stats = seed_summary(summary, dataset, metric)
    sizes = stats["batch_size"].astype(int).tolist()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    if stats["ci_low"].notna().any():
        ax.fill_between(sizes, stats["ci_low"], stats["ci_high"], color="tab:blue", alpha=0.2, lw=0,
                        label="95% CI (t over seeds)")  # fmt: skip
    ax.plot(sizes, stats["mean"], "-", color="tab:blue", lw=2, marker="o", ms=5, label="mean over seeds",
            gid="mean", zorder=3)  # fmt: skip
    seeds = sorted(_numeric(rows, "seed").dropna().astype(int).unique())
    for i, seed in enumerate(seeds):
        part = rows[_numeric(rows, "seed") == seed]
        x, y = _numeric(part, "batch_size").to_numpy(), _numeric(part, metric).to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        jitter = 2 ** ((i - (len(seeds) - 1) / 2) * 0.05)
        ax.scatter(x[ok] * jitter, y[ok], s=18, color="black", alpha=0.55, zorder=4,
                   marker=SEED_MARKERS[i % len(SEED_MARKERS)], label=f"seed {seed}")  # fmt: skip
    base = _dataset_rows(baselines, dataset) if baselines is not None else pd.DataFrame()
    if metric in base:
        values = _numeric(base, metric)
        for j, (rep, value) in enumerate(zip(base["representation"].astype(str), values, strict=True)):
            if np.isfinite(value):
                ax.axhline(value, ls="--", lw=1.3, color=BASELINE_COLOURS[j % len(BASELINE_COLOURS)],
                           label=f"baseline: {rep}", zorder=2)  # fmt: skip
    if sizes:
        _log2_x(ax, sizes)
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel(METRICS.get(metric, metric))
    ax.set_title(f"{dataset}: {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    return fig


def plot_metric_vs_batch_size(
    summary: pd.DataFrame, baselines: pd.DataFrame | None, dataset: str, out_dir: str | Path
) -> list[Path]:
    """One PNG per applicable metric: ``<out_dir>/<dataset>_<metric>_vs_batch_size.png``."""
    out_dir = Path(out_dir)
    return [
        _save(metric_figure(summary, baselines, dataset, m), out_dir / f"{dataset}_{m}_vs_batch_size.png")
        for m in applicable_metrics(summary, dataset)
    ]


# --- learning curves --------------------------------------------------------------------------------
def learning_curves_figure(histories: Mapping[tuple[int, int], pd.DataFrame], dataset: str) -> Figure:
    """Val loss vs epoch and vs optimizer step (log x); colour = batch size, thin = seed, thick = mean."""
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
                d = pd.DataFrame({"x": _numeric(h, xcol), "y": _numeric(h, "val_loss")}).dropna()
                d = d[d["x"] > 0]
                ax.plot(d["x"], d["y"], color=colours[bs], lw=0.8, alpha=0.45)
                parts.append(d)
                all_loss.append(d["y"].to_numpy())
            if parts:
                mean = pd.concat(parts).groupby("x")["y"].mean()
                ax.plot(mean.index, mean.to_numpy(), color=colours[bs], lw=2.2, label=f"{bs}", gid=f"bs{bs}")
    axes[0].set_xlabel("epoch")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xlabel("optimizer step (log scale)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("validation loss")
    if all_loss and _wants_log(np.concatenate(all_loss), ratio=5.0):
        axes[0].set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].set_title("per epoch (equal data seen)")
    axes[1].set_title("per optimizer step (equal updates)")
    for ax in axes[::-1]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="batch size", fontsize=8, title_fontsize=8)
            break
    fig.suptitle(f"{dataset}: validation loss (thin = seeds, thick = mean over seeds)")
    return fig


def plot_learning_curves(
    histories: Mapping[tuple[int, int], pd.DataFrame], dataset: str, out_path: str | Path
) -> Path:
    """``histories`` maps (batch_size, seed) to a ``history.csv`` frame (epoch, step, val_loss, ...)."""
    return _save(learning_curves_figure(histories, dataset), out_path)


# --- latent projections -----------------------------------------------------------------------------
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
) -> Figure:
    """One column per batch size; row 1 coloured by sex, row 2 (if any laterality) by laterality.

    ``labels`` is row-aligned with every latent array (same test subjects, same order).
    """
    sizes = sorted(latents_by_bs)
    lat = _numeric(labels, "laterality").to_numpy()
    rows = 2 if np.isfinite(lat).any() else 1
    fig, axes = plt.subplots(rows, max(len(sizes), 1), figsize=(3.1 * max(len(sizes), 1), 3.0 * rows),
                             squeeze=False, layout="constrained")  # fmt: skip
    sex = _numeric(labels, "sex").to_numpy()
    names = {0: "sex=0", 1: "sex=1"} | dict(sex_names or {})
    vmax = float(np.nanmax(np.abs(lat))) if rows == 2 else 1.0
    vmax = vmax if vmax > 0 else 1.0
    scatter = None
    for col, bs in enumerate(sizes):
        z = np.asarray(latents_by_bs[bs])
        if len(z) != len(labels):
            raise ValueError(f"batch size {bs}: {len(z)} latent rows but {len(labels)} label rows")
        xy, ratio = pca_2d(z)
        ax = axes[0, col]
        unknown = ~np.isin(sex, (0, 1))
        if unknown.any():
            ax.scatter(*xy[unknown].T, s=8, color="lightgray", label="sex unknown")
        for code, colour in enumerate(SEX_COLOURS):
            m = sex == code
            if m.any():
                ax.scatter(*xy[m].T, s=8, color=colour, alpha=0.7, label=names[code])
        ax.set_title(f"batch size {bs}", fontsize=9)
        if rows == 2:
            ax2, ok = axes[1, col], np.isfinite(lat)
            ax2.scatter(*xy[~ok].T, s=6, color="lightgray")
            scatter = ax2.scatter(*xy[ok].T, c=lat[ok], s=8, cmap=LATERALITY_CMAP, vmin=-vmax, vmax=vmax)
        for ax_ in axes[:, col]:
            ax_.set_xlabel(f"PC1 ({ratio[0]:.0%})", fontsize=8)
            ax_.set_ylabel(f"PC2 ({ratio[1]:.0%})", fontsize=8)
            ax_.tick_params(labelsize=7)
    if sizes:
        axes[0, 0].legend(fontsize=7, markerscale=1.5, loc="best")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes[1, :].tolist(), label="laterality (+1 = left)", shrink=0.9)
    fig.suptitle(f"{dataset}: PCA of test latents (fitted per batch size)")
    return fig


def plot_latent_projections(
    latents_by_bs: Mapping[int, np.ndarray],
    labels: pd.DataFrame,
    dataset: str,
    out_path: str | Path,
    sex_names: Mapping[int, str] | None = None,
) -> Path:
    return _save(latent_projections_figure(latents_by_bs, labels, dataset, sex_names), out_path)


# --- per-subject reconstruction losses -------------------------------------------------------------
def recon_loss_figure(per_subject_by_bs: Mapping[int, np.ndarray], dataset: str) -> Figure:
    """Box plot (mean = white triangle) plus jittered subjects per batch size; log y when spread."""
    sizes = sorted(per_subject_by_bs)
    data = [np.asarray(per_subject_by_bs[b], dtype=float) for b in sizes]
    data = [d[np.isfinite(d)] for d in data]
    colours = batch_size_colours(sizes or [1])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 * len(sizes) + 2.5), 4.0), layout="constrained")
    rng = np.random.default_rng(0)
    for i, (bs, d) in enumerate(zip(sizes, data, strict=True)):
        ax.scatter(i + rng.uniform(-0.18, 0.18, d.size), d, s=5, color=colours[bs], alpha=0.35, lw=0)
    if any(d.size for d in data):
        ax.boxplot(data, positions=range(len(sizes)), widths=0.55, showmeans=True, showfliers=False,
                   medianprops={"color": "black"}, meanprops={"marker": "^", "markerfacecolor": "white",
                   "markeredgecolor": "black"})  # fmt: skip
    ax.set_xticks(range(len(sizes)), [f"{b}\n(n={d.size})" for b, d in zip(sizes, data, strict=True)])
    if data and _wants_log(np.concatenate(data)):
        ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("per-subject test reconstruction loss")
    ax.set_title(f"{dataset}: per-subject test reconstruction loss")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_recon_loss_distributions(
    per_subject_by_bs: Mapping[int, np.ndarray], dataset: str, out_path: str | Path
) -> Path:
    return _save(recon_loss_figure(per_subject_by_bs, dataset), out_path)


# --- the whole study --------------------------------------------------------------------------------
def _read_csv(path: Path, **kwargs) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.EmptyDataError) as e:
        log.warning("figures: skipping %s (%s)", path, e)
        return None


def _test_latents(run: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(run / "latents.npz", allow_pickle=False) as npz:
            z = npz["test"]
            ids = npz["test_ids"].astype(str) if "test_ids" in npz else np.arange(len(z)).astype(str)
            return z, ids
    except (OSError, KeyError, ValueError) as e:
        log.warning("figures: skipping latents of %s (%s)", run, e)
        return None


def _labels_and_names(prepared: Path, ids: np.ndarray) -> tuple[pd.DataFrame, dict[int, str]]:
    subjects = _read_csv(prepared / "subjects.csv", dtype={"subject_id": str})
    if subjects is None or "subject_id" not in subjects:
        labels = pd.DataFrame(index=range(len(ids)))
    else:
        labels = subjects.drop_duplicates("subject_id").set_index("subject_id").reindex(ids)
        labels = labels.reset_index(drop=True)
    names: dict[int, str] = {}
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        names = {int(v): str(k) for k, v in read_json(prepared / "meta.json").get("sex_mapping", {}).items()}
    return labels, names


def make_study_figures(
    results_dir: str | Path, study_dir: str | Path, summary: pd.DataFrame, baselines: pd.DataFrame | None
) -> dict[str, list[Path]]:
    """Every figure of a study into ``study_dir / "figures" / <kind>``; returns figure kind → paths.

    Grid-point files are read from ``results_dir/<dataset>/bs<B>/seed<S>/`` and labels from
    ``results_dir/<dataset>/prepared/``; projections and loss distributions use each dataset's first
    seed. Missing or unreadable files are logged and skipped.
    """
    results_dir, out = Path(results_dir), Path(study_dir) / "figures"
    made: dict[str, list[Path]] = {k: [] for k in KINDS}
    if summary is None or summary.empty or "dataset" not in summary:
        return made
    for dataset in sorted(summary["dataset"].dropna().astype(str).unique()):
        rows = _dataset_rows(summary, dataset)
        made["metric_vs_batch_size"] += plot_metric_vs_batch_size(
            summary, baselines, dataset, out / "metric_vs_batch_size"
        )
        grid = pd.DataFrame({"bs": _numeric(rows, "batch_size"), "seed": _numeric(rows, "seed")}).dropna()
        points = sorted({(int(b), int(s)) for b, s in grid.itertuples(index=False)})
        histories = {}
        for bs, seed in points:
            h = _read_csv(results_dir / dataset / f"bs{bs}" / f"seed{seed}" / "history.csv")
            if h is not None and "val_loss" in h:
                histories[(bs, seed)] = h
        if histories:
            path = out / "learning_curves" / f"{dataset}_learning_curves.png"
            made["learning_curves"].append(plot_learning_curves(histories, dataset, path))
        if not points:
            continue
        first = min(s for _, s in points)
        runs = {bs: results_dir / dataset / f"bs{bs}" / f"seed{first}" for bs, s in points if s == first}
        latents: dict[int, np.ndarray] = {}
        ref_ids = None
        for bs, run in runs.items():
            got = _test_latents(run)
            if got is None:
                continue
            z, ids = got
            if ref_ids is None:
                ref_ids = ids
            if len(ids) == len(ref_ids) and (ids == ref_ids).all():
                latents[bs] = z
            elif set(ids) == set(ref_ids):
                latents[bs] = z[pd.Index(ids).get_indexer(ref_ids)]
            else:
                log.warning("figures: %s test subjects differ from the first run's; skipped", run)
        if latents and ref_ids is not None:
            labels, names = _labels_and_names(results_dir / dataset / "prepared", ref_ids)
            path = out / "latent_projections" / f"{dataset}_latent_projections.png"
            made["latent_projections"].append(plot_latent_projections(latents, labels, dataset, path, names))
        losses = {}
        for bs, run in runs.items():
            ps = _read_csv(run / "per_subject.csv")
            if ps is not None and "recon_loss" in ps:
                test = ps[ps["split"] == "test"] if "split" in ps else ps
                losses[bs] = _numeric(test, "recon_loss").to_numpy()
        if losses:
            path = out / "recon_loss_distributions" / f"{dataset}_recon_loss_distributions.png"
            made["recon_loss_distributions"].append(plot_recon_loss_distributions(losses, dataset, path))
    return made
