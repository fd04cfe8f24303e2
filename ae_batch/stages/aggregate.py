"""Stage ``aggregate``: every grid point and baseline → ``results/<study>/summary.csv`` and friends.

Outputs: ``summary.csv`` (one row per dataset × batch size × seed), ``folds.csv`` (per-fold downstream
scores, long), ``baselines.csv``, ``stats.csv`` (tests across batch sizes). Each is also logged to the
dataset's MLflow parent run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ae_batch import tracking
from ae_batch.io import read_json, write_csv, write_text

SUMMARY_COLUMNS = [
    "dataset",
    "batch_size",
    "seed",
    "epochs",
    "steps",
    "steps_per_epoch",
    "best_epoch",
    "train_seconds",
    "samples_per_second",
    "val_recon_loss",
    "test_recon_loss",
    "test_recon_loss_std",
    "latent_effective_rank",
    "latent_participation_ratio",
    "latent_mean_abs_cosine",
    "sex_auroc_mean",
    "sex_auroc_std",
    "laterality_mae_mean",
    "laterality_r2_mean",
    "laterality_spearman_mean",
    "codebook_perplexity",
    "codebook_usage",
    "codebook_dead_codes",
    "codebook_mean_cosine",
    "mlflow_run_id",
]
BASELINE_COLUMNS = ["dataset", "representation", "n_features", "sex_auroc_mean", "sex_auroc_std"]
STATS_METRICS = [
    "test_recon_loss",
    "sex_auroc_mean",
    "latent_effective_rank",
    "latent_participation_ratio",
    "laterality_r2_mean",
    "laterality_mae_mean",
    "codebook_perplexity",
]


def collect_summary(run_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, long per-fold table) from grid-point folders holding train.json, eval.json, folds.csv."""
    rows, folds = [], []
    for d in map(Path, run_dirs):
        train, evaluation = read_json(d / "train.json"), read_json(d / "eval.json")
        row: dict[str, Any] = {**train, **evaluation}
        rows.append(row)
        f = pd.read_csv(d / "folds.csv")
        if not f.empty:
            folds.append(
                f.assign(dataset=train["dataset"], batch_size=train["batch_size"], seed=train["seed"])
            )
    summary = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS:
        if col not in summary:
            summary[col] = pd.NA
    extra = [c for c in summary.columns if c not in SUMMARY_COLUMNS and c not in _INTERNAL]
    summary = summary[SUMMARY_COLUMNS + sorted(extra)].sort_values(["dataset", "batch_size", "seed"])
    fold_cols = ["dataset", "batch_size", "seed", "repeat", "fold", "metric", "value"]
    long = pd.concat(folds, ignore_index=True)[fold_cols] if folds else pd.DataFrame(columns=fold_cols)
    return summary.reset_index(drop=True), long.sort_values(fold_cols[:6]).reset_index(drop=True)


_INTERNAL = {"init_sha256", "fit_wall_seconds", "final_train_loss", "accelerator", "threads", "n_train"}


def collect_baselines(paths: Sequence[str | Path]) -> pd.DataFrame:
    rows = [r for p in paths for r in read_json(p)["rows"]]
    table = pd.DataFrame(rows)
    for col in BASELINE_COLUMNS:
        if col not in table:
            table[col] = pd.NA
    extra = [c for c in table.columns if c not in BASELINE_COLUMNS]
    return table[BASELINE_COLUMNS + sorted(extra)]


def aggregate(
    run_dirs: Sequence[str | Path],
    baseline_files: Sequence[str | Path],
    out_dir: str | Path,
    study: str,
    tracking_uri: str | None = None,
    config: dict[str, Any] | None = None,
) -> pd.DataFrame:
    out = Path(out_dir)
    if config is not None:
        write_text(out / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False))
    summary, folds = collect_summary(run_dirs)
    baselines = collect_baselines(baseline_files)
    stats = compute_study_stats(summary, folds)
    write_csv(out / "folds.csv", folds)
    write_csv(out / "baselines.csv", baselines)
    write_csv(out / "stats.csv", stats)
    write_csv(out / "summary.csv", summary)
    if tracking_uri:
        log_to_parents(tracking_uri, study, summary, baselines, stats, out)
    print(f"aggregated {len(summary)} grid points into {out / 'summary.csv'}", file=sys.stderr)
    return summary


def compute_study_stats(summary: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    from ae_batch.evaluation.stats import compute_stats

    metrics = [m for m in STATS_METRICS if m in summary and summary[m].notna().any()]
    fold_metrics = sorted(folds["metric"].unique()) if not folds.empty else []
    return compute_stats(summary, metrics, folds=folds if fold_metrics else None, fold_metrics=fold_metrics)


def log_to_parents(
    tracking_uri: str,
    study: str,
    summary: pd.DataFrame,
    baselines: pd.DataFrame,
    stats: pd.DataFrame,
    out: Path,
) -> None:
    for dataset, part in summary.groupby("dataset"):
        run_id = tracking.ensure_parent_run(tracking_uri, study, str(dataset))
        client = tracking.client(tracking_uri)
        for name, table in (
            ("summary.json", part),
            ("baselines.json", baselines[baselines["dataset"] == dataset]),
            ("stats.json", stats[stats["dataset"] == dataset] if "dataset" in stats else stats),
        ):
            client.log_table(run_id, data=table.astype(object).where(table.notna(), None), artifact_file=name)
        tables = [out / "summary.csv", out / "stats.csv", out / "baselines.csv", out / "config.resolved.yaml"]
        tracking.log_artifacts(tracking_uri, run_id, tables)
        # The prepared data's input contract (shape, dtype, range, preprocessing); no subject ids in it.
        tracking.log_artifacts(
            tracking_uri, run_id, [out / str(dataset) / "prepared" / "meta.json"], "prepared"
        )
