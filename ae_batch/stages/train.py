"""Stage ``train``: one grid point (dataset × batch size × seed) from the shared initial state.

Writes ``model.pt`` (best-by-validation weights), ``history.csv`` (per epoch: optimizer steps, samples,
train/val loss, seconds, samples/s) and ``train.json`` (the summary figures and the MLflow run id).
An interrupted run restarts from its initial state: nothing partial is ever written under a final name,
and the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ae_batch import tracking
from ae_batch.config import ModelConfig, TrainingConfig
from ae_batch.data.prepared import PreparedDataset, load_prepared
from ae_batch.errors import ConfigError, TrainingError
from ae_batch.io import save_torch, write_csv, write_json
from ae_batch.stages.init import file_sha256, load_initial_model


def quiet_lightning() -> None:
    """Silence Lightning's banners and tips so Snakemake's own output stays readable."""
    for name in (
        "pytorch_lightning",
        "lightning.pytorch",
        "lightning_fabric",
        "pytorch_lightning.utilities.rank_zero",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LightningModule.*is not.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")


def resolve_accelerator(name: str) -> str:
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if name == "cuda" else name


def build_trainer(max_epochs: int, accelerator: str, validate: bool = True) -> Any:
    """The Lightning Trainer every grid point uses: one device, no logger/progress bar/checkpoint
    callbacks (the system keeps the best weights and history itself; MLflow is logged per epoch after the
    fit), bitwise-deterministic on CPU."""
    import pytorch_lightning as pl

    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
        deterministic=accelerator == "cpu",
    )


def check_loss(training: TrainingConfig, meta: dict[str, Any], dataset: str) -> None:
    if training.loss == "bce" and meta.get("activation") != "sigmoid":
        raise ConfigError(
            f"training.loss 'bce' needs inputs in [0, 1] with a sigmoid output; dataset '{dataset}' is "
            f"{meta.get('kind')} with a '{meta.get('activation')}' output: use 'mse'"
        )


def train_grid_point(
    prepared_dir: str | Path,
    init_path: str | Path,
    out_dir: str | Path,
    dataset: str,
    batch_size: int,
    seed: int,
    training: TrainingConfig,
    model: ModelConfig,
    study: str = "default",
    tracking_uri: str | None = None,
    progress: bool = True,
    data: PreparedDataset | None = None,
) -> dict[str, Any]:
    """Train one grid point; return (and write) the ``train.json`` record."""
    quiet_lightning()  # before Lightning is imported: it warns at import time
    import pytorch_lightning as pl

    from ae_batch.data.modules import TensorDataModule
    from ae_batch.models.systems import AutoencoderSystem

    out = Path(out_dir)
    data = data if data is not None else load_prepared(prepared_dir)
    n_train = int(data.mask("train").sum())
    if batch_size > n_train:
        raise ConfigError(
            f"batch size {batch_size} is larger than the {n_train} training subjects of dataset '{dataset}'; "
            "remove it from batch_sizes"
        )
    check_loss(training, data.meta, dataset)
    torch.set_num_threads(training.threads)
    accelerator = resolve_accelerator(training.accelerator)

    params = {
        "dataset": dataset,
        "batch_size": batch_size,
        "seed": seed,
        **{f"training.{k}": v for k, v in asdict(training).items()},
        **{f"model.{k}": v for k, v in asdict(model).items()},
        "n_train": n_train,
        "n_features": "x".join(str(s) for s in data.input_shape),
        "init_sha256": file_sha256(init_path),
        "input_contract": data.meta.get("input_contract", {}),
    }
    run_id = None
    if tracking_uri:
        run_id = tracking.start_child_run(tracking_uri, study, dataset, batch_size, seed, params)
        features = Path(prepared_dir) / "features.npy"
        if features.exists():
            tracking.log_dataset_input(tracking_uri, run_id, dataset, file_sha256(features), prepared_dir)
    try:
        net = load_initial_model(init_path, model, data.input_shape, data.meta.get("activation", "sigmoid"))
        system = AutoencoderSystem(
            net,
            learning_rate=training.learning_rate,
            optimizer=training.optimizer,
            weight_decay=training.weight_decay,
            loss=training.loss,
            max_epochs=training.max_epochs,
            progress=progress,
        )
        module = TensorDataModule(
            torch.from_numpy(data.split_features("train")),
            torch.from_numpy(data.split_features("val")),
            batch_size=batch_size,
            seed=seed,
            eval_batch_size=training.eval_batch_size,
        )
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer = build_trainer(training.max_epochs, accelerator)
        started = time.perf_counter()
        with tracking.system_metrics(tracking_uri, run_id) if run_id else contextlib.nullcontext():
            trainer.fit(system, datamodule=module)
        wall = time.perf_counter() - started
        if system.best_state is None:
            raise TrainingError(
                f"dataset '{dataset}', batch size {batch_size}, seed {seed}: the validation loss was not finite "
                f"at any of {training.max_epochs} epochs (training diverged); lower training.learning_rate "
                f"({training.learning_rate})"
            )
        history = pd.DataFrame(system.history)
        record = {
            "dataset": dataset,
            "batch_size": batch_size,
            "seed": seed,
            "epochs": int(history["epoch"].iloc[-1]),
            "steps": int(system.optimizer_steps),
            "steps_per_epoch": module.train_dataloader().steps_per_epoch,
            "best_epoch": int(system.best_epoch),
            "val_recon_loss": float(system.best_val_loss),
            "final_train_loss": float(history["train_loss"].iloc[-1]),
            "train_seconds": float(system._train_seconds),
            "fit_wall_seconds": float(wall),
            "samples_per_second": float(system.samples_seen / system._train_seconds),
            "n_train": n_train,
            "init_sha256": params["init_sha256"],
            "accelerator": accelerator,
            "threads": training.threads,
            "mlflow_run_id": run_id,
        }
        save_torch(out / "model.pt", {"state_dict": system.best_state, "best_epoch": system.best_epoch})
        write_csv(out / "history.csv", history)
        if tracking_uri and run_id:
            tracking.log_history(tracking_uri, run_id, system.history)
            tracking.log_metrics(tracking_uri, run_id, {k: v for k, v in record.items() if k in METRICS})
            tracking.log_artifacts(tracking_uri, run_id, [out / "history.csv"])
            tracking.finish_run(tracking_uri, run_id)
        write_json(out / "train.json", record)
        return record
    except BaseException:
        if tracking_uri and run_id:
            tracking.finish_run(tracking_uri, run_id, "FAILED")
        raise


def train_seeds(
    prepared_dir: str | Path,
    init_dir: str | Path,
    batch_dir: str | Path,
    dataset: str,
    batch_size: int,
    seeds: list[int],
    training: TrainingConfig,
    model: ModelConfig,
    study: str = "default",
    tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Every seed of one batch size, one after another in one process: ``batch_dir/seed<S>/``.

    One job per (dataset, batch size) instead of per seed: a job's start (torch, Lightning and MLflow
    imports, the tracking store) costs ~10 s of CPU, more than many grid points take to train.
    Each seed is still its own grid point: its own initial state, shuffle order, outputs and MLflow run.
    """
    data = load_prepared(prepared_dir)
    records = []
    for i, seed in enumerate(seeds, 1):
        print(f"[{dataset} bs{batch_size}] seed {seed} ({i}/{len(seeds)})", file=sys.stderr, flush=True)
        records.append(
            train_grid_point(
                prepared_dir,
                Path(init_dir) / f"seed{seed}.pt",
                Path(batch_dir) / f"seed{seed}",
                dataset,
                batch_size,
                seed,
                training,
                model,
                study=study,
                tracking_uri=tracking_uri,
                data=data,
            )
        )
    return records


METRICS = {
    "epochs",
    "steps",
    "best_epoch",
    "val_recon_loss",
    "final_train_loss",
    "train_seconds",
    "samples_per_second",
}
