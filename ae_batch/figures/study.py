"""The entry point: every figure of a study from its tables and its members' files.

Members are read from ``study_dir/<dataset>/<protocol>/bs<B>/<member>/`` (``member`` column of
``summary.csv``); figures go to ``study_dir/figures/<kind>/<dataset>__....png``. Missing or unreadable
member files are logged and skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ae_batch.figures.common import (
    KINDS,
    counted_rows,
    dataset_rows,
    figure_name,
    numeric,
    protocol_label,
    protocol_rows,
    protocol_styles,
    protocols_of,
)
from ae_batch.figures.curves import plot_learning_curves
from ae_batch.figures.losses import plot_recon_loss_distributions
from ae_batch.figures.metrics import plot_metric_vs_batch_size
from ae_batch.figures.projections import plot_latent_projections
from ae_batch.grid import cell_dir

log = logging.getLogger(__name__)


def _read_csv(path: Path, **kwargs) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.EmptyDataError) as e:
        log.warning("figures: skipping %s (%s)", path, e)
        return None


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(part))


def member_dirs(
    study_dir: Path, rows: pd.DataFrame, dataset: str, protocol: str
) -> dict[tuple[int, int], Path]:
    """(batch size, seed) → member folder for the counted rows of one dataset × protocol."""
    grid = pd.DataFrame({"bs": numeric(rows, "batch_size"), "seed": numeric(rows, "seed")})
    member = rows["member"] if "member" in rows else pd.Series(np.nan, index=rows.index)
    dirs: dict[tuple[int, int], Path] = {}
    for (bs, seed), name in zip(grid.itertuples(index=False), member, strict=True):
        if not (np.isfinite(bs) and np.isfinite(seed)):
            continue
        key = (int(bs), int(seed))
        name = str(name) if isinstance(name, str) and name.strip() else f"seed{key[1]}"
        if key in dirs:
            log.warning(
                "figures: %s/%s bs%d seed%d counted twice; using %s", dataset, protocol, *key, dirs[key]
            )
            continue
        dirs[key] = cell_dir(study_dir, dataset, protocol, key[0]) / name
    return dict(sorted(dirs.items()))


def _test_latents(member: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(member / "latents.npz", allow_pickle=False) as npz:
            z = npz["test"]
            ids = npz["test_ids"].astype(str) if "test_ids" in npz else np.arange(len(z)).astype(str)
            return z, ids
    except (OSError, KeyError, ValueError) as e:
        log.warning("figures: skipping latents of %s (%s)", member, e)
        return None


def aligned_latents(members: Mapping[int, Path]) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Test latents per batch size, rows reordered to the first readable member's test ids."""
    latents: dict[int, np.ndarray] = {}
    ref_ids = None
    for bs, member in members.items():
        got = _test_latents(member)
        if got is None:
            continue
        z, ids = got
        if ref_ids is None:
            ref_ids = ids
        if len(ids) == len(ref_ids) and (ids == ref_ids).all():
            latents[bs] = z
        elif len(ids) == len(ref_ids) and set(ids) == set(ref_ids):
            latents[bs] = z[pd.Index(ids).get_indexer(ref_ids)]
        else:
            log.warning("figures: %s test subjects differ from the first member's; skipped", member)
    return latents, ref_ids


def subject_labels(subjects: pd.DataFrame | None, ids: np.ndarray) -> pd.DataFrame:
    """Rows of the prepared subjects table in the order of ``ids`` (all-NaN rows for unknown ids)."""
    if subjects is None or "subject_id" not in subjects:
        return pd.DataFrame(index=range(len(ids)))
    table = subjects.assign(subject_id=subjects["subject_id"].astype(str)).drop_duplicates("subject_id")
    return table.set_index("subject_id").reindex(np.asarray(ids, dtype=str)).reset_index(drop=True)


def _test_losses(members: Mapping[int, Path]) -> dict[int, np.ndarray]:
    losses = {}
    for bs, member in members.items():
        ps = _read_csv(member / "per_subject.csv")
        if ps is not None and "recon_loss" in ps:
            test = ps[ps["split"].astype(str) == "test"] if "split" in ps else ps
            losses[bs] = numeric(test, "recon_loss").to_numpy()
    return losses


def make_study_figures(
    study_dir: str | Path,
    summary: pd.DataFrame,
    baselines: pd.DataFrame | None,
    noise_scale: pd.DataFrame | None,
    subjects: Mapping[str, pd.DataFrame],
    sex_names: Mapping[str, Mapping[int, str]] | None = None,
    *,
    protocol_labels: Mapping[str, str] | None = None,
) -> dict[str, list[Path]]:
    """Every figure of a study into ``study_dir/figures/<kind>/``; returns figure kind → paths.

    Metric figures: one per dataset × metric, all protocols on one axes. Learning curves, latent
    projections and per-subject losses: one per dataset × protocol (projections and losses use the
    protocol's first seed). Only counted rows are used (``lr_selected`` True or empty). The kind folders
    are created even when empty (they are workflow outputs).
    """
    study_dir = Path(study_dir)
    out = study_dir / "figures"
    made: dict[str, list[Path]] = {k: [] for k in KINDS}
    for kind in KINDS:
        (out / kind).mkdir(parents=True, exist_ok=True)
    if summary is None or summary.empty or "dataset" not in summary:
        return made
    rows_all = counted_rows(summary)
    styles = protocol_styles(protocols_of(rows_all))
    datasets = sorted(rows_all["dataset"].dropna().astype(str).unique())
    for dataset in datasets:
        figure_name(dataset)  # rejects a name the file naming cannot carry, before drawing anything
    for dataset in datasets:
        made["metric_vs_batch_size"] += plot_metric_vs_batch_size(
            rows_all, baselines, dataset, out / "metric_vs_batch_size", noise_scale, protocol_labels, styles
        )
        rows = dataset_rows(rows_all, dataset)
        labels_table = (subjects or {}).get(dataset)
        names = (sex_names or {}).get(dataset)
        for protocol in protocols_of(rows):
            members = member_dirs(study_dir, protocol_rows(rows, protocol), dataset, protocol)
            if not members:
                continue
            label = protocol_label(protocol, protocol_labels)
            stem = [_safe(protocol)] if protocol else []
            histories = {}
            for key, member in members.items():
                h = _read_csv(member / "history.csv")
                if h is not None and "val_loss" in h:
                    histories[key] = h
            if histories:
                path = out / "learning_curves" / figure_name(dataset, *stem, "learning_curves")
                made["learning_curves"].append(plot_learning_curves(histories, dataset, path, label))
            first = min(seed for _, seed in members)
            firsts = {bs: member for (bs, seed), member in members.items() if seed == first}
            latents, ref_ids = aligned_latents(firsts)
            if latents and ref_ids is not None:
                path = out / "latent_projections" / figure_name(dataset, *stem, "latent_projections")
                labels = subject_labels(labels_table, ref_ids)
                made["latent_projections"].append(
                    plot_latent_projections(latents, labels, dataset, path, names, label)
                )
            losses = _test_losses(firsts)
            if losses:
                path = (
                    out / "recon_loss_distributions" / figure_name(dataset, *stem, "recon_loss_distributions")
                )
                made["recon_loss_distributions"].append(
                    plot_recon_loss_distributions(losses, dataset, path, label)
                )
    return made
