"""Stage ``evaluate``: test reconstruction, latent diversity and downstream probes of one grid point.

Writes ``eval.json`` (metrics named as the summary columns), ``per_subject.csv`` (recon loss of every
val/test subject), ``latents.npz`` (val and test latents with subject ids) and ``folds.csv`` (per-fold
downstream scores). The downstream probes use the **test** subjects' latents only.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ae_batch import tracking
from ae_batch.config import DownstreamConfig, ModelConfig, TrainingConfig
from ae_batch.data.prepared import PreparedDataset, load_prepared
from ae_batch.evaluation.diversity import latent_diversity
from ae_batch.evaluation.downstream import cv_auroc, cv_regression, summarise_folds
from ae_batch.evaluation.reconstruction import encode_and_score
from ae_batch.io import atomic_path, read_json, write_csv, write_json
from ae_batch.models.factory import build_model


def _device(accelerator: str) -> str:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def downstream_folds(
    representation: np.ndarray, subjects: pd.DataFrame, downstream: DownstreamConfig
) -> pd.DataFrame:
    """Long table (repeat, fold, metric, value) of every probe whose labels exist for these subjects."""
    frames = []
    sex = subjects["sex"].to_numpy(dtype=float) if "sex" in subjects else np.full(len(subjects), np.nan)
    known = ~np.isnan(sex)
    if known.sum() > 0 and len(np.unique(sex[known])) == 2:
        f = cv_auroc(
            representation[known],
            sex[known],
            downstream.folds,
            downstream.repeats,
            downstream.seed,
            downstream.C,
        )
        frames.append(f.melt(id_vars=["repeat", "fold"], var_name="metric", value_name="value"))
    if "laterality" in subjects:
        lat = subjects["laterality"].to_numpy(dtype=float)
        ok = ~np.isnan(lat)
        if ok.sum() >= 2 * downstream.folds:
            f = cv_regression(
                representation[ok], lat[ok], downstream.folds, downstream.repeats, downstream.seed
            )
            frames.append(f.melt(id_vars=["repeat", "fold"], var_name="metric", value_name="value"))
    if not frames:
        return pd.DataFrame(columns=["repeat", "fold", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def fold_summary(folds: pd.DataFrame) -> dict[str, float]:
    if folds.empty:
        return {}
    wide = folds.pivot_table(index=["repeat", "fold"], columns="metric", values="value").reset_index()
    return summarise_folds(wide)


def per_subject_for_tracking(table: pd.DataFrame, subject_ids: dict[str, Any]) -> pd.DataFrame | None:
    """The per-subject table as MLflow may see it: raw ids only if asked, else salted hashes.

    A tracking server is a wider audience than the results folder. The salt is random per study and
    stays in ``results/<study>/``, so hashes can be linked back locally but not guessed from a small id
    space (e.g. ``BraTS2021_00000``…). Without a salt file nothing is shared.
    """
    if subject_ids.get("log_raw"):
        return table
    salt_file = subject_ids.get("salt_file")
    if not salt_file or not Path(salt_file).exists():
        return None
    salt = Path(salt_file).read_text().strip()
    hashed = table.copy()
    hashed["subject_id"] = [
        hashlib.sha256(f"{salt}:{s}".encode()).hexdigest()[:16] for s in table["subject_id"]
    ]
    return hashed.rename(columns={"subject_id": "subject_hash"})


def reconstruction_figure(net: torch.nn.Module, test: np.ndarray, record: dict[str, Any], path: Path) -> Path:
    from ae_batch.recon_figure import N_SUBJECTS, plot_reconstructions

    x = torch.as_tensor(np.asarray(test[:N_SUBJECTS]))
    with torch.no_grad():
        recon = net.eval().cpu()(x).recon.numpy()
    title = f"{record['dataset']}: batch size {record['batch_size']}, seed {record['seed']} (best epoch {record['best_epoch']})"
    return plot_reconstructions(x.numpy(), recon, title, path)


def evaluate_grid_point(
    prepared_dir: str | Path,
    train_dir: str | Path,
    out_dir: str | Path,
    training: TrainingConfig,
    model: ModelConfig,
    downstream: DownstreamConfig,
    tracking_uri: str | None = None,
    data: PreparedDataset | None = None,
    subject_ids: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate one trained grid point; ``subject_ids`` says how per-subject rows may go to MLflow:
    ``{"log_raw": False, "salt_file": path}`` (the default: salted hashes, or nothing without a salt)."""
    out = Path(out_dir)
    train_dir = Path(train_dir)
    data = data if data is not None else load_prepared(prepared_dir)
    record = read_json(train_dir / "train.json")
    torch.set_num_threads(training.threads)
    net = build_model(model, data.input_shape, data.meta.get("activation", "sigmoid"))
    net.load_state_dict(
        torch.load(train_dir / "model.pt", map_location="cpu", weights_only=False)["state_dict"]
    )
    device = _device(training.accelerator)

    per_subject, latents = [], {}
    results: dict[str, Any] = {}
    test_codes = None
    for split in ("val", "test"):
        losses, z, codes = encode_and_score(
            net, data.split_features(split), training.loss, training.eval_batch_size, device
        )
        subjects = data.split_subjects(split)
        per_subject.append(
            pd.DataFrame({"subject_id": subjects["subject_id"], "split": split, "recon_loss": losses})
        )
        latents[split] = z
        results[f"{split}_recon_loss"] = float(losses.mean())
        if split == "test":
            test_codes = codes
    results["test_recon_loss_std"] = float(per_subject[-1]["recon_loss"].std(ddof=1))
    results.update(latent_diversity(latents["test"]))
    if test_codes is not None and hasattr(net, "codebook"):
        from ae_batch.evaluation.codebook import codebook_metrics

        results.update(codebook_metrics(test_codes, net.codebook.detach().cpu().numpy()))

    folds = downstream_folds(latents["test"], data.split_subjects("test"), downstream)
    results.update(fold_summary(folds))
    results.update({k: record[k] for k in ("dataset", "batch_size", "seed", "mlflow_run_id")})

    figures = []
    if data.features.ndim == 5:  # MRI: the same first test subjects at every grid point
        figures.append(
            reconstruction_figure(net, data.split_features("test"), record, out / "reconstructions.png")
        )
    write_csv(out / "per_subject.csv", pd.concat(per_subject, ignore_index=True))
    write_csv(out / "folds.csv", folds)
    with atomic_path(out / "latents.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            val=latents["val"],
            test=latents["test"],
            val_ids=data.split_subjects("val")["subject_id"].to_numpy(str),
            test_ids=data.split_subjects("test")["subject_id"].to_numpy(str),
        )
    run_id = record.get("mlflow_run_id")
    if tracking_uri and run_id:
        tracking.log_metrics(tracking_uri, run_id, {k: v for k, v in results.items() if isinstance(v, float)})
        tracking.log_artifacts(tracking_uri, run_id, [out / "folds.csv", *figures])
        shared = per_subject_for_tracking(pd.concat(per_subject, ignore_index=True), subject_ids or {})
        if shared is not None:
            write_csv(out / "per_subject_mlflow.csv", shared)
            tracking.log_artifacts(tracking_uri, run_id, [out / "per_subject_mlflow.csv"])
    write_json(out / "eval.json", results)
    if tracking_uri and run_id:
        tracking.log_artifacts(tracking_uri, run_id, [out / "eval.json"])
    return results


def evaluate_seeds(
    prepared_dir: str | Path,
    batch_dir: str | Path,
    seeds: list[int],
    training: TrainingConfig,
    model: ModelConfig,
    downstream: DownstreamConfig,
    tracking_uri: str | None = None,
    subject_ids: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every seed of one batch size in one process (see ``train.train_seeds`` for why)."""
    data = load_prepared(prepared_dir)
    results = []
    for seed in seeds:
        run = Path(batch_dir) / f"seed{seed}"
        results.append(
            evaluate_grid_point(
                prepared_dir,
                run,
                run,
                training,
                model,
                downstream,
                tracking_uri,
                data=data,
                subject_ids=subject_ids,
            )
        )
        print(f"evaluated {run}: test loss {results[-1]['test_recon_loss']:.5f}", file=sys.stderr, flush=True)
    return results
