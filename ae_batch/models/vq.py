"""3D VQ-VAE: conv encoder → vector quantiser on a small spatial grid → conv decoder.

The quantiser is our own (MONAI's ``VQVAE`` starts with 1 of 32 codes in use):

* **Codebook trained by gradient**, not by EMA: the codebook is an ``nn.Parameter`` updated by the same
  optimiser as every other weight, with the VQ-VAE loss (van den Oord et al. 2017)
  ``aux_loss = ||sg[z_e] - e||² + commitment_cost * ||z_e - sg[e]||²`` (both mean squared errors).
  EMA updates would add a second, per-step update rule with its own decay, whose effective time constant
  changes with the number of steps per epoch, i.e. with the batch size this study varies.
* **Straight-through estimator**: the decoder sees ``z_e + sg[e - z_e]``, so reconstruction gradients reach
  the encoder unchanged.
* **Data-dependent codebook init** (dead-code-aware): on the first forward in training mode, the codebook is
  overwritten with ``codebook_size`` encoder vectors of that batch chosen by k-means++ seeding (distinct
  vectors first, so the many identical background positions do not fill the codebook with copies), plus 1%
  noise. Every code thus starts inside the encoder's output distribution instead of far from it (the usual
  cause of codebook collapse). A buffer ``initialised`` records that this happened; it is saved with the
  weights, so a reloaded model is not re-initialised. The seeding draws from the global torch RNG.
  No dead-code restarts during training: they would depend on the contents, hence the size, of each batch;
  a code that is never selected gets no gradient and stays dead, which the codebook metrics then report.
  Because the lazy init sees only the first training batch (one volume at batch size 1), a batch-size study
  should call :meth:`VQVAE3d.initialise_codebook` once with the same fixed set of volumes for every run.

``latent`` (the vector the evaluation probes) is the *pre-quantisation* encoder output ``z_e`` average-pooled
separately over the two halves of the grid along the first spatial axis (x: left-right in the RAS volumes
``prepare`` writes): ``[N, 2 * embedding_dim]``, 32 with the defaults, like the other arms' latents. A global
average pool (the previous design) mixed both hemispheres, so tumour laterality could not be decoded from
the latent by construction. It is continuous, so effective rank and linear probes stay meaningful; the
discrete side is reported through ``codes`` and the codebook metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ae_batch.models.components import AutoencoderOutput
from ae_batch.models.conv import (
    _NEGATIVE_SLOPE,
    _check_shape,
    check_input,
    conv_decoder,
    conv_encoder,
    spatial_shapes,
)


def hemisphere_pool(z: torch.Tensor) -> torch.Tensor:
    """``[N, D, X, Y, Z]`` → ``[N, 2D]``: the mean over each half of the x axis (an odd middle slice
    counts towards both halves), so left and right stay apart."""
    return F.adaptive_avg_pool3d(z, (2, 1, 1)).flatten(1)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser over channel vectors of a ``[N, D, *spatial]`` tensor."""

    def __init__(self, codebook_size: int, embedding_dim: int, commitment_cost: float = 0.25) -> None:
        super().__init__()
        if codebook_size < 1 or embedding_dim < 1:
            raise ValueError(
                f"codebook_size and embedding_dim must be positive, got {codebook_size}, {embedding_dim}"
            )
        if commitment_cost < 0:
            raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost}")
        self.codebook_size = int(codebook_size)
        self.embedding_dim = int(embedding_dim)
        self.commitment_cost = float(commitment_cost)
        # Fallback init, used only if the model never runs a training forward before use.
        self.embedding = nn.Parameter(
            torch.randn(self.codebook_size, self.embedding_dim) / self.embedding_dim**0.5
        )
        self.register_buffer("initialised", torch.tensor(False))

    @staticmethod
    def _flatten(z: torch.Tensor) -> torch.Tensor:
        return z.movedim(1, -1).reshape(-1, z.shape[1])

    @torch.no_grad()
    def _data_init(self, flat: torch.Tensor) -> None:
        """k-means++ seeding: each next code is an encoder vector drawn with probability ∝ squared distance
        to the codes chosen so far (uniform once every vector is already covered), plus 1% noise."""
        m, k = flat.shape[0], self.codebook_size
        chosen = [int(torch.randint(m, (1,), device=flat.device))]
        d2 = (flat - flat[chosen[0]]).pow(2).sum(1)
        for _ in range(k - 1):
            weights = d2 if bool(d2.sum() > 0) else torch.ones_like(d2)
            i = int(torch.multinomial(weights, 1))
            chosen.append(i)
            d2 = torch.minimum(d2, (flat - flat[i]).pow(2).sum(1))
        picked = flat[chosen]
        noise = 0.01 * (flat.std() + 1e-6) * torch.randn_like(picked)
        self.embedding.copy_(picked + noise)
        self.initialised.fill_(True)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean) for each row of ``flat`` ``[M, D]``."""
        e = self.embedding
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)
        return d.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (straight-through quantised ``z``, VQ loss, code indices ``[N, *spatial]``)."""
        flat = self._flatten(z)
        if self.training and not bool(self.initialised):
            self._data_init(flat.detach())
        idx = self.nearest(flat.detach())
        q = F.embedding(idx, self.embedding)
        codebook_loss = F.mse_loss(q, flat.detach())
        commitment_loss = F.mse_loss(flat, q.detach())
        loss = codebook_loss + self.commitment_cost * commitment_loss
        q_st = flat + (q - flat).detach()
        spatial = (z.shape[0], *z.shape[2:])
        q_st = q_st.view(*spatial, z.shape[1]).movedim(-1, 1)
        return q_st, loss, idx.view(spatial)


class VQVAE3d(nn.Module):
    """Strided 3D conv encoder → 1×1×1 conv to ``embedding_dim`` → quantiser → 1×1×1 conv → decoder.

    With the defaults at 32³ the grid is 4³ = 64 codes per volume over a codebook of 64 vectors of
    dimension 16. Output fields: ``recon`` ``[N, *input_shape]``, ``latent`` (pooled pre-quantisation
    encoder output, per hemisphere) ``[N, 2 * embedding_dim]``, ``aux_loss`` (VQ loss), ``codes`` ``[N, d, h, w]`` (long).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int, int] = (1, 32, 32, 32),
        channels: Sequence[int] = (8, 16, 32),
        embedding_dim: int = 16,
        codebook_size: int = 64,
        commitment_cost: float = 0.25,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.input_shape = _check_shape(input_shape, channels)
        self.channels = tuple(int(c) for c in channels)
        self.embedding_dim = int(embedding_dim)
        self.latent_dim = 2 * self.embedding_dim
        self.codebook_size = int(codebook_size)
        shapes = spatial_shapes(self.input_shape[1:], len(self.channels))
        self.grid_shape = shapes[-1]

        self.encoder = nn.Sequential(
            conv_encoder(self.input_shape[0], self.channels),
            nn.Conv3d(self.channels[-1], self.embedding_dim, 1),
        )
        self.quantizer = VectorQuantizer(self.codebook_size, self.embedding_dim, commitment_cost)
        self.decoder = nn.Sequential(
            nn.Conv3d(self.embedding_dim, self.channels[-1], 1),
            nn.LeakyReLU(_NEGATIVE_SLOPE),
            conv_decoder(self.channels, self.input_shape[0], shapes, activation),
        )

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors ``[codebook_size, embedding_dim]`` (detached)."""
        return self.quantizer.embedding.detach()

    def _encode_grid(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_shape)
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation encoder output pooled per hemisphere: ``[N, 2 * embedding_dim]``."""
        return hemisphere_pool(self._encode_grid(x))

    @torch.no_grad()
    def initialise_codebook(self, x: torch.Tensor) -> None:
        """Seed the codebook from the encoder outputs of ``x`` now (k-means++), replacing the lazy init."""
        self.quantizer._data_init(VectorQuantizer._flatten(self._encode_grid(x)))

    @torch.no_grad()
    def quantize_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``[N, d, h, w]`` (long) for ``x``; never triggers the data-dependent init."""
        z = self._encode_grid(x)
        idx = self.quantizer.nearest(VectorQuantizer._flatten(z))
        return idx.view(z.shape[0], *z.shape[2:])

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        z = self._encode_grid(x)
        q, vq_loss, codes = self.quantizer(z)
        return AutoencoderOutput(
            recon=self.decoder(q), latent=hemisphere_pool(z), aux_loss=vq_loss, codes=codes
        )
