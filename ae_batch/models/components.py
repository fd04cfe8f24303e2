"""Plain nn.Modules: the autoencoders themselves, with no training logic.

Every autoencoder here follows one contract, so the Lightning system and the evaluation code treat them
alike: ``forward(x)`` returns an :class:`AutoencoderOutput` with the reconstruction (same shape as ``x``),
a vector ``latent`` of shape ``[N, latent_dim]`` (for a VQ model: the pre-quantisation encoder output,
pooled to a vector) and ``aux_loss``, an extra loss term to add to the reconstruction loss (0 for a plain AE;
the codebook/commitment loss for a VQ model). ``encode(x)`` returns ``latent`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AutoencoderOutput:
    recon: torch.Tensor
    latent: torch.Tensor
    aux_loss: torch.Tensor
    codes: torch.Tensor | None = None  # VQ code indices per position, [N, ...]; None for a plain AE


_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "identity": nn.Identity}


def output_activation(name: str) -> nn.Module:
    """``sigmoid`` for inputs in [0, 1] (binary phenotypes), ``identity`` for standardised features."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown output activation {name!r}; expected one of {sorted(_ACTIVATIONS)}"
        ) from None


LATENT_ACTIVATIONS = ("identity", "relu")


def _mlp(dims: Sequence[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPAutoencoder(nn.Module):
    """Fully connected AE: input → hidden_dims (ReLU) → latent → mirrored decoder → output activation.

    With ``hidden_dims=(256, 128)`` and ``latent_dim=32`` this is the Kerley et al. EHR model (FC+ReLU
    layers down to 32, mirrored decoder, sigmoid output for binary PheCodes). The latent layer is linear
    by default: a ReLU there leaves latent units dead (12 of 32 on the default EHR cohort, at every batch
    size), which distorts effective rank and the probes. ``latent_activation="relu"`` reproduces the
    paper's "three FC+ReLU layers" exactly.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (256, 128),
        latent_dim: int = 32,
        activation: str = "sigmoid",
        latent_activation: str = "identity",
    ) -> None:
        super().__init__()
        if input_dim < 1 or latent_dim < 1 or any(h < 1 for h in hidden_dims):
            raise ValueError(
                f"dimensions must be positive: input {input_dim}, hidden {list(hidden_dims)}, latent {latent_dim}"
            )
        if latent_activation not in LATENT_ACTIVATIONS:
            raise ValueError(
                f"latent_activation must be one of {LATENT_ACTIVATIONS}, got {latent_activation!r}"
            )
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.latent_activation = latent_activation
        self.encoder = _mlp(
            [input_dim, *hidden_dims, latent_dim], last_activation=latent_activation == "relu"
        )
        self.decoder = nn.Sequential(
            _mlp([latent_dim, *reversed(hidden_dims), input_dim], last_activation=False),
            output_activation(activation),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        z = self.encoder(x)
        return AutoencoderOutput(recon=self.decoder(z), latent=z, aux_loss=x.new_zeros(()))
