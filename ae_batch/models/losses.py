"""Reconstruction losses (kept free of Lightning so evaluation imports stay light).

One definition of each loss, reduced two ways: per sample (evaluation, validation) and over the whole
batch (the training step, where one fused reduction is cheaper; equal to the mean of per-sample losses
because every sample has the same number of elements).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812


def _reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, loss: str, reduction: str) -> torch.Tensor:
    if loss == "mse":
        return F.mse_loss(recon, x, reduction=reduction)
    if loss == "bce":
        return F.binary_cross_entropy(recon.clamp(1e-7, 1 - 1e-7), x, reduction=reduction)
    raise ValueError(f"unknown loss {loss!r}; expected 'mse' or 'bce'")


def per_sample_loss(recon: torch.Tensor, x: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """Reconstruction loss of each sample, averaged over its features/voxels: shape ``[N]``."""
    return _reconstruction_loss(recon, x, loss, "none").flatten(1).mean(dim=1)


def batch_loss(recon: torch.Tensor, x: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """Mean reconstruction loss over every element of the batch (a scalar)."""
    return _reconstruction_loss(recon, x, loss, "mean")
