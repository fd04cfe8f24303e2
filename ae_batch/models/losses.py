"""Reconstruction losses, per sample (kept free of Lightning so evaluation imports stay light)."""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812


def per_sample_loss(recon: torch.Tensor, x: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """Reconstruction loss of each sample, averaged over its features/voxels: shape ``[N]``."""
    if loss == "mse":
        err = F.mse_loss(recon, x, reduction="none")
    elif loss == "bce":
        err = F.binary_cross_entropy(recon.clamp(1e-7, 1 - 1e-7), x, reduction="none")
    else:
        raise ValueError(f"unknown loss {loss!r}; expected 'mse' or 'bce'")
    return err.flatten(1).mean(dim=1)
