"""The one Lightning Trainer factory, device resolution, and quiet Lightning."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from ae_batch.devices import resolve_device


def quiet_lightning() -> None:
    """Silence Lightning's banners and tips so Snakemake's own output stays readable (call before import)."""
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
    warnings.filterwarnings("ignore", message=".*srun.*command is available.*")
    warnings.filterwarnings("ignore", message=".*infinite.*")


def build_trainer(max_epochs: int, accelerator: str = "auto") -> Any:
    """A single-device Trainer with no logger, progress bar, checkpointing or validation loop of its
    own (the system validates on the protocol's schedule, keeps the best weights and writes its own
    resumable checkpoints); bitwise-deterministic on CPU. ``devices=1`` stays explicit: inside a SLURM
    job Lightning would otherwise read the job's task layout."""
    quiet_lightning()
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.environments import LightningEnvironment

    device = resolve_device(accelerator)
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="gpu" if device == "cuda" else device,
        devices=1,
        plugins=[LightningEnvironment()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=device == "cpu",
    )
