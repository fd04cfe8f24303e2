"""Stage ``aggregate``: every member, baseline and noise scale → the study's tables.

Outputs under ``results/<study>/``: ``summary.csv`` (one row per member), ``folds.csv`` (per-fold
downstream scores, long; descriptive only), ``baselines.csv``, ``noise_scale.csv``, ``stats.csv`` (tests
across batch sizes, seed-level, per dataset × protocol), ``verdict.csv``, ``verdict_vs_paper.csv``
(whether the paper protocol's effect survives each controlled protocol) and ``config.resolved.yaml``.
Statistics use, for a tuned protocol, only the selected learning rate of each seed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ae_batch.io import read_json, write_csv, write_text

SUMMARY_COLUMNS = [
    "dataset", "protocol", "batch_size", "seed", "learning_rate", "lr_selected", "member", "train_group",
    "budget", "epochs", "steps", "steps_per_epoch", "samples_seen", "best_epoch", "best_step",
    "train_seconds", "validation_seconds", "samples_per_second", "val_recon_loss", "test_recon_loss",
    "test_recon_loss_std", "latent_effective_rank", "latent_participation_ratio", "latent_mean_abs_cosine",
    "latent_dead_units", "sex_auroc_mean", "sex_auroc_std", "laterality_mae_mean", "laterality_r2_mean",
    "laterality_spearman_mean", "codebook_perplexity", "codebook_usage", "codebook_dead_codes",
    "codebook_mean_cosine", "gradient_noise_scale", "mlflow_run_id",
]  # fmt: skip
TIMING_COLUMNS = ["train_seconds", "validation_seconds", "samples_per_second", "train_group", "mlflow_run_id"]
BASELINE_COLUMNS = ["dataset", "representation", "n_features", "sex_auroc_mean", "sex_auroc_std"]
STATS_METRICS = [
    "test_recon_loss", "sex_auroc_mean", "latent_effective_rank", "latent_participation_ratio",
    "laterality_r2_mean", "laterality_mae_mean", "codebook_perplexity",
]  # fmt: skip
NOISE_COLUMNS = [
    "dataset", "protocol", "batch_size", "seed", "point", "grad_sq_norm", "trace_cov",
    "gradient_noise_scale", "method",
]  # fmt: skip
KEY = ["dataset", "protocol", "batch_size", "seed", "learning_rate"]


def member_dirs(eval_manifests: Sequence[str | Path]) -> list[Path]:
    """The member folders of every evaluated group (from each group's spec beside its manifest)."""
    dirs = []
    for path in map(Path, eval_manifests):
        group_id = path.name.split(".")[0]
        spec = read_json(path.with_name(f"{group_id}.spec.json"))
        dirs += [Path(m["dir"]) for m in spec["members"]]
    return dirs


def collect_summary(
    dirs: Sequence[str | Path], run_ids: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary, long per-fold table, trained noise-scale rows) from member folders."""
    rows, folds, noise = [], [], []
    for d in map(Path, dirs):
        train, evaluation = read_json(d / "train.json"), read_json(d / "eval.json")
        for key in ("dataset", "protocol", "batch_size", "member"):
            if evaluation.get(key) != train[key]:
                raise ValueError(
                    f"{d}: eval.json is of {key} {evaluation.get(key)!r} but train.json of {train[key]!r}: "
                    "the folder's evaluation belongs to another grid point"
                )
        row: dict[str, Any] = {**train, **evaluation}
        key = f"{train['dataset']}/{train['protocol']}/bs{train['batch_size']}/{train['member']}"
        row["mlflow_run_id"] = (run_ids or {}).get(key)
        rows.append(row)
        f = pd.read_csv(d / "folds.csv")
        if not f.empty:
            folds.append(f.assign(**{k: train[k] for k in KEY}))
        if (d / "noise_scale.json").exists() and evaluation.get("lr_selected") is not False:
            ns = read_json(d / "noise_scale.json")
            noise.append({k: train[k] for k in ("dataset", "protocol", "batch_size", "seed")} | ns)
    summary = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS:
        if col not in summary:
            summary[col] = pd.NA
    summary = summary[SUMMARY_COLUMNS].sort_values(KEY, kind="stable").reset_index(drop=True)
    fold_cols = [*KEY, "repeat", "fold", "metric", "value"]
    long = pd.concat(folds, ignore_index=True)[fold_cols] if folds else pd.DataFrame(columns=fold_cols)
    long = long.sort_values(fold_cols[:-1], kind="stable").reset_index(drop=True)
    trained = pd.DataFrame(noise).assign(point="trained") if noise else pd.DataFrame(columns=NOISE_COLUMNS)
    return summary, long, trained.reindex(columns=NOISE_COLUMNS)


def selected_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, protocol, batch size, seed): untuned members, and the selected learning
    rate of tuned ones (``lr_selected`` True)."""
    sel = summary["lr_selected"]
    keep = sel.isna() | (sel.astype(object) == True)  # noqa: E712 - object column of True/False/NA
    return summary[keep.to_numpy()]


def collect_baselines(paths: Sequence[str | Path]) -> pd.DataFrame:
    rows = [r for p in paths for r in read_json(p)["rows"]]
    table = pd.DataFrame(rows)
    for col in BASELINE_COLUMNS:
        if col not in table:
            table[col] = pd.NA
    return table[BASELINE_COLUMNS + sorted(c for c in table.columns if c not in BASELINE_COLUMNS)]


def read_run_ids(paths: Sequence[str | Path]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for p in paths:
        table = pd.read_csv(p, dtype=str)
        ids.update(zip(table["key"], table["run_id"], strict=True))
    return ids


def aggregate(
    eval_manifests: Sequence[str | Path],
    baseline_files: Sequence[str | Path],
    noise_files: Sequence[str | Path],
    out_dir: str | Path,
    run_id_files: Sequence[str | Path] = (),
    config: dict[str, Any] | None = None,
) -> pd.DataFrame:
    from ae_batch.evaluation.stats import compute_stats
    from ae_batch.evaluation.verdict import compare_to_reference, compute_verdict

    out = Path(out_dir)
    if config is not None:
        write_text(out / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False))
    summary, folds, trained_noise = collect_summary(member_dirs(eval_manifests), read_run_ids(run_id_files))
    init_noise = [pd.read_csv(p) for p in noise_files]
    noise = pd.concat([*init_noise, trained_noise], ignore_index=True).reindex(columns=NOISE_COLUMNS)
    selected = selected_rows(summary)
    metrics = [m for m in STATS_METRICS if pd.to_numeric(selected[m], errors="coerce").notna().any()]
    stats = compute_stats(selected, metrics)
    verdict = compute_verdict(selected)
    write_csv(out / "folds.csv", folds)
    write_csv(out / "baselines.csv", collect_baselines(baseline_files))
    write_csv(out / "noise_scale.csv", noise)
    write_csv(out / "stats.csv", stats)
    write_csv(out / "verdict.csv", verdict)
    write_csv(out / "verdict_vs_paper.csv", compare_to_reference(verdict, "paper"))
    write_csv(out / "summary.csv", summary)
    n_sel = len(selected)
    print(
        f"aggregated {len(summary)} members ({n_sel} in the statistics) into {out / 'summary.csv'}; "
        f"verdict rows: {len(verdict)}",
        file=sys.stderr,
    )
    return summary
