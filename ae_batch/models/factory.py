"""Build the autoencoder a config asks for, from the prepared data's input shape."""

from __future__ import annotations

from collections.abc import Sequence

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

        return MLPAutoencoder(shape[0], cfg.hidden_dims, cfg.latent_dim, activation)
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
