"""Build the autoencoder a config asks for, from the prepared data's input shape; load saved states."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ae_batch.config import ModelConfig
from ae_batch.errors import ConfigError


def build_model(cfg: ModelConfig, input_shape: Sequence[int], activation: str = "sigmoid") -> nn.Module:
    """``mlp`` for feature vectors ``[D]``; ``conv``/``vqvae`` for volumes ``[C, X, Y, Z]``."""
    shape = tuple(int(s) for s in input_shape)
    if cfg.kind == "mlp":
        if len(shape) != 1:
            raise ConfigError(f"model.kind 'mlp' needs feature vectors, got input shape {list(shape)}")
        from ae_batch.models.components import MLPAutoencoder

        return MLPAutoencoder(shape[0], cfg.hidden_dims, cfg.latent_dim, activation, cfg.latent_activation)
    if cfg.kind in ("conv", "vqvae"):
        if len(shape) != 4:
            raise ConfigError(
                f"model.kind '{cfg.kind}' needs volumes [C, X, Y, Z], got input shape {list(shape)}"
            )
        if cfg.kind == "conv":
            from ae_batch.models.conv import ConvAutoencoder3d

            return ConvAutoencoder3d(shape, cfg.conv_channels, cfg.latent_dim, activation)  # type: ignore[arg-type]
        from ae_batch.models.vq import VQVAE3d

        return VQVAE3d(
            shape,  # type: ignore[arg-type]
            cfg.conv_channels,
            embedding_dim=cfg.embedding_dim,
            codebook_size=cfg.codebook_size,
            activation=activation,
        )
    raise ConfigError(f"model.kind: unknown kind {cfg.kind!r}; expected mlp, conv or vqvae")


def load_model(
    path: str | Path, cfg: ModelConfig, input_shape: Sequence[int], activation: str = "sigmoid"
) -> nn.Module:
    """Rebuild the plain model and load a saved ``{"state_dict": ...}`` (an initial state or a trained
    member's best-by-validation weights)."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    net = build_model(cfg, input_shape, activation)
    net.load_state_dict(payload["state_dict"])
    return net
