"""Shape, gradient, determinism and trainability checks for the 3D conv AE and the VQ-VAE."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ae_batch.models.components import AutoencoderOutput
from ae_batch.models.conv import ConvAutoencoder3d
from ae_batch.models.vq import VQVAE3d

SHAPES = [(1, 32, 32, 32), (1, 24, 28, 20)]
FACTORIES: dict[str, Callable[..., nn.Module]] = {"conv": ConvAutoencoder3d, "vq": VQVAE3d}


def _grid(shape: tuple[int, ...], n_stages: int = 3) -> tuple[int, ...]:
    out = shape
    for _ in range(n_stages):
        out = tuple((s + 1) // 2 for s in out)
    return out


def _loss(out: AutoencoderOutput, x: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out.recon, x) + out.aux_loss


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", FACTORIES)
def test_forward_shapes(kind: str, shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    model = FACTORIES[kind](input_shape=shape)
    x = torch.rand(3, *shape)
    out = model(x)
    assert isinstance(out, AutoencoderOutput)
    assert out.recon.shape == x.shape
    assert out.latent.shape == (3, model.latent_dim)
    assert out.aux_loss.shape == ()
    for t in (out.recon, out.latent, out.aux_loss):
        assert torch.isfinite(t).all()
    assert ((out.recon >= 0) & (out.recon <= 1)).all()  # sigmoid output
    if kind == "conv":
        assert model.latent_dim == 32
        assert out.codes is None
        assert out.aux_loss.item() == 0.0
    else:
        assert model.latent_dim == 32  # embedding_dim 16 pooled per hemisphere
        assert out.codes is not None
        assert out.codes.dtype == torch.long
        assert out.codes.shape == (3, *_grid(shape[1:]))
        assert out.codes.min() >= 0 and out.codes.max() < model.codebook_size
        assert out.aux_loss.item() > 0


@pytest.mark.parametrize("kind", FACTORIES)
def test_encode_matches_forward_latent(kind: str) -> None:
    torch.manual_seed(0)
    model = FACTORIES[kind]().eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), model(x).latent)


@pytest.mark.parametrize("kind", FACTORIES)
def test_every_parameter_gets_gradient(kind: str) -> None:
    torch.manual_seed(0)
    model = FACTORIES[kind]().train()
    x = torch.rand(2, 1, 32, 32, 32)
    _loss(model(x), x).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if kind == "vq":  # the codebook is trained by gradient, not EMA
        assert model.quantizer.embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", FACTORIES)
def test_same_seed_same_init(kind: str) -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return FACTORIES[kind]().state_dict()

    a, b, c = build(7), build(7), build(8)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("kind", FACTORIES)
def test_adam_steps_reduce_loss(kind: str) -> None:
    torch.manual_seed(0)
    shape = (1, 16, 16, 16)
    model = FACTORIES[kind](input_shape=shape).train()
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 16)] * 3, indexing="ij"))
    centres = torch.tensor([[0.3, -0.2, 0.1], [-0.4, 0.3, -0.1]]).view(2, 3, 1, 1, 1)
    x = torch.exp(-((grid - centres) ** 2).sum(1, keepdim=True) / 0.1)  # two Gaussian blobs
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = _loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("kind", FACTORIES)
def test_odd_small_shape_many_stages(kind: str) -> None:
    torch.manual_seed(0)
    shape = (2, 5, 7, 9)
    model = FACTORIES[kind](input_shape=shape, channels=(4, 4, 4, 4), activation="identity")
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.recon.shape == x.shape
    if kind == "vq":
        assert out.codes.shape == (2, 1, 1, 1)


@pytest.mark.parametrize("kind", FACTORIES)
def test_bad_arguments(kind: str) -> None:
    model = FACTORIES[kind]()
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.rand(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="input_shape"):
        FACTORIES[kind](input_shape=(32, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        FACTORIES[kind](channels=())
    with pytest.raises(ValueError, match="activation"):
        FACTORIES[kind](activation="tanhh")


def test_vq_data_init_spreads_codes() -> None:
    torch.manual_seed(0)
    model = VQVAE3d()
    x = torch.rand(4, 1, 32, 32, 32)
    assert not bool(model.quantizer.initialised)
    model.eval()
    model(x)  # eval forward never initialises
    assert not bool(model.quantizer.initialised)
    model.train()
    out = model(x)
    assert bool(model.quantizer.initialised)
    # every code starts on (a perturbed copy of) an encoder output, so many codes are in use at once
    assert out.codes.unique().numel() >= model.codebook_size // 4
    before = model.codebook.clone()
    model(x)  # no second init
    torch.testing.assert_close(model.codebook, before, rtol=0, atol=0)
    # the flag travels with the weights
    fresh = VQVAE3d()
    fresh.load_state_dict(model.state_dict())
    assert bool(fresh.quantizer.initialised)


def test_vq_codebook_and_quantize_indices() -> None:
    torch.manual_seed(0)
    model = VQVAE3d(embedding_dim=8, codebook_size=16)
    x = torch.rand(2, 1, 32, 32, 32)
    model.train()
    model(x)
    model.eval()
    assert model.codebook.shape == (16, 8)
    assert not model.codebook.requires_grad
    idx = model.quantize_indices(x)
    assert idx.dtype == torch.long and idx.shape == (2, 4, 4, 4)
    torch.testing.assert_close(idx, model(x).codes, rtol=0, atol=0)
    # each index is the nearest code to the encoder output at that position
    z = model.encoder(x).movedim(1, -1).reshape(-1, 8)
    torch.testing.assert_close(idx.reshape(-1), torch.cdist(z, model.codebook).argmin(1), rtol=0, atol=0)


def test_vq_straight_through_reaches_encoder() -> None:
    torch.manual_seed(0)
    model = VQVAE3d(commitment_cost=0.0).train()
    x = torch.rand(2, 1, 32, 32, 32)
    model(x)  # data init
    model.zero_grad()
    F.mse_loss(model(x).recon, x).backward()  # reconstruction only: encoder gradient must come through STE
    assert model.encoder[0][0].weight.grad.abs().sum() > 0
    assert model.quantizer.embedding.grad is None or model.quantizer.embedding.grad.abs().sum() == 0


def test_vq_explicit_codebook_init_is_batch_independent() -> None:
    fixed = torch.rand(4, 1, 16, 16, 16)

    def codebook_after(batch_size: int) -> torch.Tensor:
        torch.manual_seed(3)
        model = VQVAE3d(input_shape=(1, 16, 16, 16))
        model.initialise_codebook(fixed)
        assert bool(model.quantizer.initialised)
        init = model.codebook.clone()
        model.train()(torch.rand(batch_size, 1, 16, 16, 16))  # must not re-initialise
        torch.testing.assert_close(model.codebook, init, rtol=0, atol=0)
        return init

    torch.testing.assert_close(codebook_after(1), codebook_after(8), rtol=0, atol=0)


def test_vq_latent_keeps_left_and_right_apart() -> None:
    """A change confined to the left half of the volume moves only the left half's latent entries
    (the previous global pool mixed them, so laterality could not be decoded by construction)."""
    from ae_batch.models.vq import VQVAE3d

    torch.manual_seed(0)
    model = VQVAE3d((1, 16, 16, 16), (4, 8), embedding_dim=3, codebook_size=4).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    bumped = x.clone()
    bumped[:, :, :4] += 0.5  # the low-x quarter: within the receptive fields of the left half only
    z, zb = model.encode(x).view(3, 2), model.encode(bumped).view(3, 2)  # [embedding_dim, hemisphere]
    assert (z[:, 0] - zb[:, 0]).abs().max() > 1e-3
    assert torch.allclose(z[:, 1], zb[:, 1], atol=1e-6)
