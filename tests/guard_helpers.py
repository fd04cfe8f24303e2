"""Small planted fixtures for ``test_science_guards.py``: prepared datasets with known structure, models
with known weights, and trained-member folders written by hand (no training run needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ae_batch.config import ModelConfig
from ae_batch.data.prepared import PreparedDataset, save_prepared
from ae_batch.io import save_torch, write_csv, write_json
from ae_batch.models.components import MLPAutoencoder

# A tiny VQ-VAE: 8³ volumes, two stride-2 stages → a 2³ grid of codes per volume.
VOLUME_SHAPE = (1, 8, 8, 8)
TINY_VQ = ModelConfig(kind="vqvae", conv_channels=(2, 4), embedding_dim=3, codebook_size=16)


def interleaved_subjects(
    counts: dict[str, int], seed: int, extra: dict[str, dict[str, np.ndarray]] | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """A subjects table whose splits are shuffled together (train rows are not the first rows) with
    ids ``s<number>`` in shuffled order; returns (table, order) where ``order[i]`` is the index of row
    ``i`` in the unshuffled concatenation train, val, test (in ``counts``' order)."""
    rng = np.random.default_rng(seed)
    splits = np.concatenate([[s] * n for s, n in counts.items()])
    numbers = rng.permutation(len(splits)) + 100
    order = rng.permutation(len(splits))
    table = pd.DataFrame({"subject_id": [f"s{numbers[i]}" for i in order], "split": splits[order]})
    for column, per_split in (extra or {}).items():
        table[column] = np.concatenate([per_split[s] for s in counts])[order]
    return table, order


def save_dataset(
    directory: Path, features: np.ndarray, subjects: pd.DataFrame, activation: str
) -> PreparedDataset:
    data = PreparedDataset(
        features.astype(np.float32), subjects.reset_index(drop=True), {"activation": activation}
    )
    save_prepared(directory, data)
    return data


def identity_mlp() -> MLPAutoencoder:
    """4 → 4 → latent 4 → 4 → 4, identity output: the encoder is the identity on non-negative inputs
    (latent = x) and the decoder is all zeros (recon = 0), so a subject's MSE is ``mean(x²)``."""
    net = MLPAutoencoder(4, hidden_dims=(4,), latent_dim=4, activation="identity")
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.encoder[0].weight.copy_(torch.eye(4))
        net.encoder[2].weight.copy_(torch.eye(4))
    return net


IDENTITY_MLP = ModelConfig(kind="mlp", hidden_dims=(4,), latent_dim=4)


def write_member(member_dir: Path, net: torch.nn.Module, **record: Any) -> dict[str, Any]:
    """A trained member folder as the train stage leaves it: ``model.pt`` and ``train.json``."""
    member_dir.mkdir(parents=True, exist_ok=True)
    save_torch(member_dir / "model.pt", {"state_dict": net.state_dict(), "best_epoch": 1, "best_step": 1})
    full = {
        "dataset": "d",
        "protocol": "paper",
        "batch_size": 8,
        "member": "seed0",
        "seed": 0,
        "best_epoch": 1,
        "diverged": False,
        **record,
    }
    write_json(member_dir / "train.json", full)
    return full


def write_summary_member(root: Path, index: int, protocol: str, batch_size: int, seed: int) -> dict[str, Any]:
    """A finished member folder whose every number is planted from ``index`` (distinct across folders):
    train.json, eval.json, folds.csv and noise_scale.json. Returns the planted contents."""
    member = f"seed{seed}"
    d = root / "d" / protocol / f"bs{batch_size}" / member
    d.mkdir(parents=True)
    base = 1000.0 * (index + 1)
    train = {
        "dataset": "d",
        "protocol": protocol,
        "batch_size": batch_size,
        "seed": seed,
        "learning_rate": 0.001,
        "member": member,
        "train_group": f"g{index}",
        "budget": "epochs",
        "epochs": index + 2,
        "steps": 10 * (index + 2),
        "steps_per_epoch": 10,
        "samples_seen": int(base) + 1,
        "best_epoch": index + 1,
        "best_step": 10 * (index + 1),
        "train_seconds": base + 0.5,
        "validation_seconds": base + 0.25,
        "samples_per_second": base + 0.125,
    }
    evaluation = {
        **{k: train[k] for k in ("dataset", "protocol", "batch_size")},
        "member": member,
        "lr_selected": None,
        "val_recon_loss": base + 0.01,
        "test_recon_loss": base + 0.02,
        "test_recon_loss_std": base + 0.03,
        "latent_effective_rank": base + 0.04,
        "latent_participation_ratio": base + 0.05,
        "latent_mean_abs_cosine": base + 0.06,
        "latent_dead_units": base + 0.07,
        "sex_auroc_mean": base + 0.08,
        "sex_auroc_std": base + 0.09,
        "gradient_noise_scale": base + 0.11,
    }
    write_json(d / "train.json", train)
    write_json(d / "eval.json", evaluation)
    folds = pd.DataFrame(
        {"repeat": [0, 0], "fold": [0, 1], "metric": "sex_auroc", "value": [base + 0.5, base + 0.6]}
    )
    write_csv(d / "folds.csv", folds)
    noise = {
        "grad_sq_norm": base + 0.7,
        "trace_cov": base + 0.8,
        "gradient_noise_scale": base + 0.11,
        "method": "exact",
    }
    write_json(d / "noise_scale.json", noise)
    return {"dir": d, "train": train, "eval": evaluation, "folds": folds, "noise": noise}
