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
    """(per-subject reconstruction loss ``[N]``, latents ``[N, d]``, VQ codes ``[N, ...]`` or None).

    Row ``i`` of every output belongs to subject ``x[i]``: consecutive slices of ``batch_size`` subjects
    (the fixed evaluation batch size, whatever the training batch size was) are run in eval mode and
    concatenated in input order. The model is left in eval mode on ``device``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(x) == 0:
        raise ValueError("no subjects to evaluate")
    model.eval().to(device)
    losses, latents, codes = [], [], []
    for start in range(0, len(x), batch_size):
        batch = torch.as_tensor(np.asarray(x[start : start + batch_size]), device=device)
        out = model(batch)
        batch_losses = per_sample_loss(out.recon, batch, loss)
        batch_latents = out.latent.flatten(1)
        if batch_losses.shape != (len(batch),) or len(batch_latents) != len(batch):
            raise ValueError(
                f"model returned losses {list(batch_losses.shape)} and latents {list(batch_latents.shape)} "
                f"for a batch of {len(batch)} subjects"
            )
        losses.append(batch_losses.cpu())
        latents.append(batch_latents.cpu())
        if out.codes is not None:
            codes.append(out.codes.cpu())
    stacked_codes = torch.cat(codes).numpy() if codes else None
    return torch.cat(losses).numpy(), torch.cat(latents).numpy(), stacked_codes
