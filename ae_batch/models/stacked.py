"""K autoencoders of one architecture as one module: the same math as K separate models, one pass.

Why: at small batch sizes a training step is dominated by per-op overhead and by passes over the
weights, gradients and optimizer moments. Stacking K members (seeds, learning rates) makes each op do K
members' work for about the overhead of one, and one fused optimizer pass updates them all.

Layout: each parameter of the plain model becomes one contiguous ``[K, ...]`` tensor whose slice k is
member k's (a linear layer's weight is kept as ``[K, in, out]``, the layout ``baddbmm`` consumes, so its
gradient arrives contiguous and autograd hands it over without a copy). ``load_member`` and
``member_state_dict`` convert to and from the plain model's state dict, so evaluation uses the plain
nn.Modules unchanged.

Forward passes: the MLP uses batched matmuls over ``[K, B, D]``; the conv AE and the VQ-VAE use grouped
convolutions (``groups=K``) over channel-stacked inputs ``[B, K*C, X, Y, Z]`` and batched matmuls for
their linear and codebook parts, with one codebook per member. Members never mix: no op combines two
members' values, so a diverging member (a too-large learning rate in a tuned grid) cannot poison its
siblings. ``member_losses`` returns each member's mean loss; the training loss is their sum, whose
gradient with respect to member k's weights is member k's own gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ae_batch.models.components import MLPAutoencoder
from ae_batch.models.conv import _NEGATIVE_SLOPE, ConvAutoencoder3d
from ae_batch.models.vq import VQVAE3d

_ACT = {"sigmoid": torch.sigmoid, "identity": lambda t: t}
_CHANNELS_LAST = torch.channels_last_3d


class StackedAutoencoder(nn.Module):
    """Base: ``[K, ...]`` parameters built from a plain template model, named by the plain names."""

    def __init__(self, template: nn.Module, k: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"a stack needs at least one member, got {k}")
        self.k = int(k)
        linear = {f"{n}.weight" for n, m in template.named_modules() if isinstance(m, nn.Linear)}
        self._transposed = linear  # plain [out, in] ↔ stacked [K, in, out]
        self._names: list[str] = []
        for name, p in template.named_parameters():
            shape = (p.shape[1], p.shape[0]) if name in linear else tuple(p.shape)
            self.register_parameter(name.replace(".", "__"), nn.Parameter(torch.zeros(self.k, *shape)))
            self._names.append(name)
        self._template_state = {n: t.detach().clone() for n, t in template.state_dict().items()}

    def p(self, name: str) -> torch.Tensor:
        """Member-stacked parameter ``[K, ...]`` by its plain name (e.g. ``encoder.0.weight``)."""
        return getattr(self, name.replace(".", "__"))

    def stacked_parameters(self) -> list[nn.Parameter]:
        """The ``[K, ...]`` parameters in the plain model's parameter order."""
        return [self.p(n) for n in self._names]

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: ARG002 - always None: autograd then
        """Drop the gradients: the next backward hands fresh ones over without an accumulate pass."""
        for p in self.parameters():
            p.grad = None

    @torch.no_grad()
    def load_member(self, k: int, state_dict: dict[str, torch.Tensor]) -> None:
        for name in self._names:
            value = state_dict[name]
            self.p(name)[k].copy_(value.t() if name in self._transposed else value)

    @torch.no_grad()
    def member_state_dict(
        self, k: int, params: Sequence[torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Member k's weights as the plain model's state dict (``params``: saved copies of
        ``stacked_parameters()`` to read from instead of the live ones)."""
        params = list(params) if params is not None else self.stacked_parameters()
        state = {n: t.clone() for n, t in self._template_state.items()}  # buffers (e.g. VQ's initialised)
        for name, value in zip(self._names, params, strict=True):
            v = value[k].detach().cpu()
            state[name] = (v.t() if name in self._transposed else v).contiguous().clone()
        return state

    # --- to implement ---------------------------------------------------------------------------
    def stack_inputs(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The model input for member k's samples ``x[idx[k]]`` (``idx`` ``[K, B]``)."""
        raise NotImplementedError

    def repeat_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model input where every member sees the same samples ``x`` (validation)."""
        raise NotImplementedError

    def member_losses(self, inputs: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-member mean reconstruction loss ``[K]``, per-member auxiliary loss ``[K]``)."""
        raise NotImplementedError

    def member_sample_losses(self, inputs: torch.Tensor, loss: str) -> torch.Tensor:
        """Per-member, per-sample reconstruction loss ``[K, B]`` (validation)."""
        raise NotImplementedError


def _elementwise(recon: torch.Tensor, x: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "mse":
        return F.mse_loss(recon, x, reduction="none")
    if loss == "bce":
        return F.binary_cross_entropy(recon.clamp(1e-7, 1 - 1e-7), x, reduction="none")
    raise ValueError(f"unknown loss {loss!r}; expected 'mse' or 'bce'")


class StackedMLP(StackedAutoencoder):
    """K :class:`MLPAutoencoder` members; inputs ``[K, B, D]``."""

    def __init__(self, template: MLPAutoencoder, k: int) -> None:
        super().__init__(template, k)
        linear = lambda seq: [n for n, m in seq.named_modules() if isinstance(m, nn.Linear)]  # noqa: E731
        self.encoder_layers = [f"encoder.{n}" for n in linear(template.encoder)]
        self.decoder_layers = [f"decoder.{n}" for n in linear(template.decoder)]
        self.latent_relu = template.latent_activation == "relu"
        self.activation = "sigmoid" if isinstance(template.decoder[-1], nn.Sigmoid) else "identity"

    def _layer(self, h: torch.Tensor, name: str) -> torch.Tensor:
        # nn.Linear computes x @ W.T + b; the stacked weight is stored as W.T, [K, in, out].
        return torch.baddbmm(self.p(f"{name}.bias").unsqueeze(1), h, self.p(f"{name}.weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, name in enumerate(self.encoder_layers):
            h = self._layer(h, name)
            if i < len(self.encoder_layers) - 1 or self.latent_relu:
                h = torch.relu(h)
        for i, name in enumerate(self.decoder_layers):
            h = self._layer(h, name)
            if i < len(self.decoder_layers) - 1:
                h = torch.relu(h)
        return _ACT[self.activation](h)

    def stack_inputs(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return x[idx]

    def repeat_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).expand(self.k, *x.shape)

    def member_losses(self, inputs: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
        recon = _elementwise(self(inputs), inputs, loss).mean(dim=(1, 2))
        return recon, torch.zeros_like(recon)

    def member_sample_losses(self, inputs: torch.Tensor, loss: str) -> torch.Tensor:
        return _elementwise(self(inputs), inputs, loss).mean(dim=2)


class _StackedConvBase(StackedAutoencoder):
    """Shared by the conv AE and the VQ-VAE: channel-stacked volumes ``[B, K*C, X, Y, Z]``."""

    channels_in: int

    def _conv(self, h: torch.Tensor, name: str, stride: int, padding: int) -> torch.Tensor:
        w, b = self.p(f"{name}.weight"), self.p(f"{name}.bias")
        return F.conv3d(h, w.view(-1, *w.shape[2:]), b.view(-1), stride, padding, groups=self.k)

    def _deconv(self, h: torch.Tensor, name: str, output_padding: Sequence[int]) -> torch.Tensor:
        w, b = self.p(f"{name}.weight"), self.p(f"{name}.bias")
        return F.conv_transpose3d(
            h, w.view(-1, *w.shape[2:]), b.view(-1), 2, 1, tuple(output_padding), groups=self.k
        )

    def _decoder(self, h: torch.Tensor, prefix: str, modules: nn.Sequential) -> torch.Tensor:
        deconvs = [(n, m) for n, m in modules.named_children() if isinstance(m, nn.ConvTranspose3d)]
        for i, (n, m) in enumerate(deconvs):
            h = self._deconv(h, f"{prefix}.{n}", m.output_padding)
            if i < len(deconvs) - 1:
                h = F.leaky_relu(h, _NEGATIVE_SLOPE)
        return _ACT[self.activation](h)

    # Channels-last 3D: oneDNN then runs the (grouped, transposed) convolutions about twice as fast on
    # CPU as in the default layout, where transposed 3D convolutions fall back to a slow native kernel.
    def stack_inputs(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        picked = x[idx.t()]  # [B, K, C, X, Y, Z]
        return picked.reshape(picked.shape[0], -1, *picked.shape[3:]).contiguous(memory_format=_CHANNELS_LAST)

    def repeat_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, self.k, 1, 1, 1).contiguous(memory_format=_CHANNELS_LAST)

    def _per_member(self, e: torch.Tensor) -> torch.Tensor:
        """Elementwise loss ``[B, K*C, ...]`` → per-member, per-sample means ``[K, B]``."""
        return e.reshape(e.shape[0], self.k, -1).mean(dim=2).t()


class StackedConvAE(_StackedConvBase):
    """K :class:`ConvAutoencoder3d` members."""

    def __init__(self, template: ConvAutoencoder3d, k: int) -> None:
        super().__init__(template, k)
        self.convs = [
            f"encoder.{n}" for n, m in template.encoder.named_children() if isinstance(m, nn.Conv3d)
        ]
        self.bottleneck_shape = template.bottleneck_shape
        self._decoder_modules = template.decoder
        self.activation = "sigmoid" if isinstance(template.decoder[-1], nn.Sigmoid) else "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name in self.convs:
            h = F.leaky_relu(self._conv(h, name, 2, 1), _NEGATIVE_SLOPE)
        b = h.shape[0]
        flat = h.reshape(b, self.k, -1).transpose(0, 1)  # [K, B, F]
        w, bias = self.p("to_latent.weight"), self.p("to_latent.bias")
        z = torch.baddbmm(bias.unsqueeze(1), flat, w)  # [K, B, L]
        w, bias = self.p("from_latent.0.weight"), self.p("from_latent.0.bias")
        h = F.leaky_relu(torch.baddbmm(bias.unsqueeze(1), z, w), _NEGATIVE_SLOPE)
        h = h.transpose(0, 1).reshape(b, self.k * self.bottleneck_shape[0], *self.bottleneck_shape[1:])
        return self._decoder(h, "decoder", self._decoder_modules)

    def member_losses(self, inputs: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self._per_member(_elementwise(self(inputs), inputs, loss)).mean(dim=1)
        return recon, torch.zeros_like(recon)

    def member_sample_losses(self, inputs: torch.Tensor, loss: str) -> torch.Tensor:
        return self._per_member(_elementwise(self(inputs), inputs, loss))


class StackedVQVAE(_StackedConvBase):
    """K :class:`VQVAE3d` members, one codebook each (``quantizer.embedding`` ``[K, M, D]``)."""

    def __init__(self, template: VQVAE3d, k: int) -> None:
        super().__init__(template, k)
        enc = template.encoder[0]
        self.convs = [f"encoder.0.{n}" for n, m in enc.named_children() if isinstance(m, nn.Conv3d)]
        self.embedding_dim = template.embedding_dim
        self.commitment_cost = template.quantizer.commitment_cost
        self._decoder_modules = template.decoder[2]
        self.activation = "sigmoid" if isinstance(template.decoder[2][-1], nn.Sigmoid) else "identity"

    def _quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Straight-through quantisation of ``[B, K*D, g...]`` per member; returns (q_st, aux ``[K]``)."""
        b, grid = z.shape[0], z.shape[2:]
        d = self.embedding_dim
        flat = z.reshape(b, self.k, d, -1).permute(1, 0, 3, 2).reshape(self.k, -1, d)  # [K, B*G, D]
        e = self.p("quantizer.embedding")  # [K, M, D]
        fd = flat.detach()
        dist = (
            fd.pow(2).sum(2, keepdim=True)
            - 2 * torch.bmm(fd, e.detach().transpose(1, 2))
            + e.detach().pow(2).sum(2).unsqueeze(1)
        )
        idx = dist.argmin(2)  # [K, B*G]
        q = torch.gather(e, 1, idx.unsqueeze(2).expand(-1, -1, d))
        codebook = (q - fd).pow(2).mean(dim=(1, 2))
        commitment = (flat - q.detach()).pow(2).mean(dim=(1, 2))
        q_st = flat + (q - flat).detach()
        q_st = q_st.reshape(self.k, b, -1, d).permute(1, 0, 3, 2).reshape(b, self.k * d, *grid)
        return q_st, codebook + self.commitment_cost * commitment

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for name in self.convs:
            h = F.leaky_relu(self._conv(h, name, 2, 1), _NEGATIVE_SLOPE)
        z = self._conv(h, "encoder.1", 1, 0)
        q, aux = self._quantise(z)
        h = F.leaky_relu(self._conv(q, "decoder.0", 1, 0), _NEGATIVE_SLOPE)
        return self._decoder(h, "decoder.2", self._decoder_modules), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def member_losses(self, inputs: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
        recon, aux = self._forward(inputs)
        return self._per_member(_elementwise(recon, inputs, loss)).mean(dim=1), aux

    def member_sample_losses(self, inputs: torch.Tensor, loss: str) -> torch.Tensor:
        return self._per_member(_elementwise(self(inputs), inputs, loss))


def stack_members(template: nn.Module, states: Sequence[dict[str, torch.Tensor]]) -> StackedAutoencoder:
    """A stacked model of ``len(states)`` members of ``template``'s architecture, loaded with ``states``."""
    kinds = ((VQVAE3d, StackedVQVAE), (ConvAutoencoder3d, StackedConvAE), (MLPAutoencoder, StackedMLP))
    for plain, stacked in kinds:
        if isinstance(template, plain):
            model = stacked(template, len(states))
            break
    else:
        raise TypeError(f"no stacked form of {type(template).__name__}")
    for k, state in enumerate(states):
        model.load_member(k, state)
    return model
