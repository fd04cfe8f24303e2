"""3D convolutional autoencoder for MRI volumes, with a vector latent (Kerley et al.: 32 dimensions).

Encoder: one strided (stride 2, kernel 3, padding 1) ``Conv3d`` + LeakyReLU per entry of ``channels``, so each
stage maps a spatial size ``n`` to ``ceil(n / 2)``; the last feature map is flattened and a ``Linear`` layer
gives the latent vector (no activation on the latent: a ReLU there would create dead latent dimensions and
bias rank/probe measurements). Decoder: ``Linear`` + LeakyReLU back to the last feature map, then mirrored
``ConvTranspose3d`` stages whose ``output_padding`` is computed per axis from the encoder's shapes, so any
input size (divisible by ``2**len(channels)`` or not) is reconstructed exactly, with no crop or pad.

There is no normalisation layer on purpose: BatchNorm statistics depend on the batch size, the very variable
this study changes (and are degenerate at batch size 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ae_batch.models.components import AutoencoderOutput, output_activation

_NEGATIVE_SLOPE = 0.2


def _check_shape(input_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be 4 positive ints (C, D, H, W), got {tuple(input_shape)}")
    if len(channels) < 1 or any(int(c) < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive ints, got {list(channels)}")
    return shape  # type: ignore[return-value]


def spatial_shapes(spatial: Sequence[int], n_stages: int) -> list[tuple[int, ...]]:
    """Spatial sizes before and after each stride-2 stage: ``[input, stage1, ..., stage_n]`` (ceil(n/2))."""
    shapes = [tuple(int(s) for s in spatial)]
    for _ in range(n_stages):
        shapes.append(tuple((s - 1) // 2 + 1 for s in shapes[-1]))
    return shapes


def conv_encoder(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """Stride-2 ``Conv3d`` (kernel 3, padding 1) + LeakyReLU per stage."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for c_out in channels:
        layers += [nn.Conv3d(c_in, c_out, 3, stride=2, padding=1), nn.LeakyReLU(_NEGATIVE_SLOPE)]
        c_in = c_out
    return nn.Sequential(*layers)


def conv_decoder(
    channels: Sequence[int], out_channels: int, shapes: Sequence[Sequence[int]], activation: str
) -> nn.Sequential:
    """Mirror of :func:`conv_encoder`: ``ConvTranspose3d`` stages from ``channels[-1]`` to ``out_channels``.

    ``shapes`` is :func:`spatial_shapes` of the input; each stage gets the ``output_padding`` (0 or 1 per
    axis) that restores the encoder's size at that depth exactly. The last stage has no LeakyReLU; the
    output activation follows it.
    """
    chans = [*reversed(channels), out_channels]
    n = len(channels)
    layers: list[nn.Module] = []
    for i in range(n):
        small, big = shapes[n - i], shapes[n - i - 1]
        # ConvTranspose3d(k=3, s=2, p=1): out = 2 * in - 1 + output_padding
        pad = tuple(b - (2 * s - 1) for s, b in zip(small, big, strict=True))
        layers.append(nn.ConvTranspose3d(chans[i], chans[i + 1], 3, stride=2, padding=1, output_padding=pad))
        if i < n - 1:
            layers.append(nn.LeakyReLU(_NEGATIVE_SLOPE))
    layers.append(output_activation(activation))
    return nn.Sequential(*layers)


def check_input(x: torch.Tensor, input_shape: tuple[int, ...]) -> None:
    """Raise a readable error when ``x`` is not ``[N, *input_shape]``."""
    if x.dim() != 5 or tuple(x.shape[1:]) != input_shape:
        raise ValueError(
            f"expected input of shape [N, {', '.join(map(str, input_shape))}], got {list(x.shape)}"
        )


class ConvAutoencoder3d(nn.Module):
    """Strided 3D conv encoder → flatten → Linear latent → Linear → transposed-conv decoder → activation.

    Defaults (``channels=(8, 16, 32)`` at 32³) give a 32³ → 4³×32 bottleneck, a 2048 → 32 latent layer and
    about 0.15 M parameters: a few ms per sample for forward + backward on one CPU thread.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int, int] = (1, 32, 32, 32),
        channels: Sequence[int] = (8, 16, 32),
        latent_dim: int = 32,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.input_shape = _check_shape(input_shape, channels)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        self.channels = tuple(int(c) for c in channels)
        self.latent_dim = int(latent_dim)
        shapes = spatial_shapes(self.input_shape[1:], len(self.channels))
        self.bottleneck_shape = (self.channels[-1], *shapes[-1])
        flat = math.prod(self.bottleneck_shape)

        self.encoder = conv_encoder(self.input_shape[0], self.channels)
        self.to_latent = nn.Linear(flat, self.latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(self.latent_dim, flat), nn.LeakyReLU(_NEGATIVE_SLOPE))
        self.decoder = conv_decoder(self.channels, self.input_shape[0], shapes, activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent vectors ``[N, latent_dim]``."""
        check_input(x, self.input_shape)
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[N, *input_shape]`` from latent vectors ``[N, latent_dim]``."""
        h = self.from_latent(z).view(z.shape[0], *self.bottleneck_shape)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        z = self.encode(x)
        return AutoencoderOutput(recon=self.decode(z), latent=z, aux_loss=x.new_zeros(()))
