"""Reconstruction loss and latents of held-out subjects, with a fixed evaluation batch size."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ae_batch.models.losses import per_sample_loss


@torch.no_grad()
def encode_and_score(
    model: nn.Module, x: np.ndarray, loss: str = "mse", batch_size: int = 256, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(per-subject reconstruction loss ``[N]``, latents ``[N, d]``, VQ codes ``[N, ...]`` or None)."""
    model.eval().to(device)
    losses, latents, codes = [], [], []
    for start in range(0, len(x), batch_size):
        batch = torch.as_tensor(np.asarray(x[start : start + batch_size]), device=device)
        out = model(batch)
        losses.append(per_sample_loss(out.recon, batch, loss).cpu())
        latents.append(out.latent.flatten(1).cpu())
        if out.codes is not None:
            codes.append(out.codes.cpu())
    stacked_codes = torch.cat(codes).numpy() if codes else None
    return torch.cat(losses).numpy(), torch.cat(latents).numpy(), stacked_codes
