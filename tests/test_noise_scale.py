"""Gradient noise scale (``ae_batch.evaluation.noise_scale``): closed forms, planted values, the two-batch
estimator against the exact one, invariances, and that the models are left untouched."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ae_batch.evaluation.noise_scale import (
    NoiseScale,
    autoencoder_loss,
    choose_method,
    noise_scale,
)
from ae_batch.models.components import MLPAutoencoder
from ae_batch.models.conv import ConvAutoencoder3d
from ae_batch.models.vq import VQVAE3d

METHODS = ["exact", "two_batch"]


# ----------------------------------------------------------------------------------------- helpers


class _Planted(nn.Module):
    """loss_i = w · x_i: the per-sample gradient is x_i itself, whatever w is (planted gradients)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(dim, dtype=torch.float64))


def _planted_loss(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    return xb @ model.w


def _reference(g: np.ndarray) -> tuple[float, float]:
    """(|G|², tr Σ) from explicit per-sample gradients [N, P], straight from the definitions."""
    mean = g.mean(axis=0)
    centred = g - mean
    return float(mean @ mean), float((centred**2).sum() / (len(g) - 1))


def _squared_error(d: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """Per-sample squared error of a linear regression; x packs the d features and the target."""

    def loss(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
        return (model(xb[:, :d]).squeeze(1) - xb[:, d]) ** 2

    return loss


def _scaled(loss: Callable[[nn.Module, torch.Tensor], torch.Tensor], c: float) -> Any:
    return lambda model, xb: c * loss(model, xb)


def _volumes(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, 8, generator=torch.Generator().manual_seed(seed))


def _tiny_conv() -> nn.Module:
    torch.manual_seed(0)
    return ConvAutoencoder3d(input_shape=(1, 8, 8, 8), channels=(2, 4), latent_dim=4)


def _tiny_vq(initialise: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = VQVAE3d(input_shape=(1, 8, 8, 8), channels=(2, 4), embedding_dim=4, codebook_size=8)
    if initialise:
        model.initialise_codebook(_volumes(6, seed=1))
    return model


def _binary(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < 0.2).float()


def _tiny_mlp(d: int = 12) -> nn.Module:
    torch.manual_seed(0)
    return MLPAutoencoder(d, hidden_dims=(16, 8), latent_dim=4)


# ------------------------------------------------------------------------------ closed forms, planted


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_matches_closed_form_linear_regression(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    n, d = 50, 3
    features = rng.normal(size=(n, d))
    target = features @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.3, size=n)
    torch.manual_seed(0)
    model = nn.Linear(d, 1).to(dtype)
    w = model.weight.detach().double().numpy().ravel()
    b = float(model.bias.detach().double())
    residual = features @ w + b - target
    g = 2 * residual[:, None] * np.hstack([features, np.ones((n, 1))])  # d(loss_i)/d(w, b)
    want_g2, want_tr = _reference(g)

    x = torch.as_tensor(np.hstack([features, target[:, None]]), dtype=dtype)
    got = noise_scale(model, x, _squared_error(d), "exact", chunk_size=16)

    assert got.method == "exact" and got.n_samples == n
    for value, want in [(got.grad_sq_norm, want_g2), (got.trace_cov, want_tr)]:
        assert value == pytest.approx(want, rel=0.01)  # the specified tolerance
        assert value == pytest.approx(want, rel=1e-10 if dtype == torch.float64 else 1e-5)
    assert got.gradient_noise_scale == pytest.approx(want_tr / want_g2, rel=1e-5)


def test_exact_planted_values_use_centred_unbiased_covariance() -> None:
    """g_i = 1, 2, 3, 6: |G|² = 9, Σ(g − ḡ)² = 14, so tr Σ = 14/3. The usual slips give other values:
    dropping N/(N−1) → 14/4, the uncentred second moment → 50/4 (or 50/3)."""
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64)
    got = noise_scale(_Planted(1), x, _planted_loss, "exact", chunk_size=3)
    assert got.grad_sq_norm == pytest.approx(9.0, rel=1e-12)
    assert got.trace_cov == pytest.approx(14 / 3, rel=1e-12)
    assert got.gradient_noise_scale == pytest.approx(14 / 27, rel=1e-12)
    for wrong in (14 / 4, 50 / 4, 50 / 3):
        assert got.trace_cov != pytest.approx(wrong, rel=0.01)


@pytest.mark.parametrize("chunk_size", [1, 5, 256])
def test_exact_vector_planted_values_any_chunking(chunk_size: int) -> None:
    g = np.random.default_rng(1).normal(loc=0.5, size=(23, 4))
    got = noise_scale(_Planted(4), torch.as_tensor(g), _planted_loss, "exact", chunk_size=chunk_size)
    want_g2, want_tr = _reference(g)
    assert got.grad_sq_norm == pytest.approx(want_g2, rel=1e-12)
    assert got.trace_cov == pytest.approx(want_tr, rel=1e-12)


# ------------------------------------------------------------------------------------------ two-batch


def test_finite_population_identity_by_enumeration() -> None:
    """The identity the two-batch estimator relies on, over all C(N, b) subsets (no sampling noise):
    E||G_b||² = |G|² + tr(Σ)·(1/b − 1/N), with tr Σ the unbiased (N − 1) covariance trace."""
    g = np.random.default_rng(2).normal(size=(7, 3))
    g2, tr = _reference(g)
    for b in (1, 2, 3, 5, 7):
        norms = [np.sum(g[list(s)].mean(axis=0) ** 2) for s in itertools.combinations(range(7), b)]
        assert np.mean(norms) == pytest.approx(g2 + tr * (1 / b - 1 / 7), rel=1e-12)


@pytest.mark.parametrize("big_batch", [None, 4])
def test_two_batch_is_unbiased_for_the_exact_quantities(big_batch: int | None) -> None:
    """Averaged over many permutations, the estimator converges to the exact |G|² and tr Σ of the set. With
    N = 6 the without-replacement correction matters: McCandlish's |G|² formula alone would be low by
    tr Σ / N (more than half of |G|² here), and reading tr Σ as the 1/N covariance would be off by 20%."""
    g = np.random.default_rng(3).normal(loc=0.4, size=(6, 3))
    x = torch.as_tensor(g)
    exact = noise_scale(_Planted(3), x, _planted_loss, "exact")
    est = noise_scale(
        _Planted(3), x, _planted_loss, "two_batch", small_batch=2, big_batch=big_batch, n_passes=4000
    )
    assert exact.trace_cov / 6 > 0.5 * exact.grad_sq_norm  # the correction is not negligible here
    assert est.method == "two_batch"
    assert est.trace_cov == pytest.approx(exact.trace_cov, rel=0.05)
    # |G|² comes out of a difference of noisy terms much larger than itself (sampling sd ~3.5% with B = 4),
    # so the tolerance is wider; the uncorrected formula would be off by more than 50%.
    assert est.grad_sq_norm == pytest.approx(exact.grad_sq_norm, rel=0.12)
    assert est.grad_sq_norm - est.trace_cov / 6 < 0.5 * exact.grad_sq_norm
    if big_batch is None:  # B = N: the full gradient enters exactly, so |G|² is exact, not estimated
        assert est.grad_sq_norm == pytest.approx(exact.grad_sq_norm, rel=1e-10)


def test_two_batch_agrees_with_exact_on_synthetic_ehr(
    small_ehr_cohort: Any, make_events_entry: Callable[..., dict[str, Any]], splits_config: Any
) -> None:
    from ae_batch.data.ehr import build_events_dataset

    data = build_events_dataset(make_events_entry(small_ehr_cohort), splits_config)
    x = torch.as_tensor(data.split_features("train"), dtype=torch.float32)
    torch.manual_seed(0)
    model = MLPAutoencoder(x.shape[1])
    loss = autoencoder_loss("bce")
    exact = noise_scale(model, x, loss, "exact")
    est = noise_scale(model, x, loss, "two_batch", seed=0)
    assert (exact.method, est.method) == ("exact", "two_batch")
    assert exact.n_samples == est.n_samples == len(x)
    assert est.gradient_noise_scale == pytest.approx(exact.gradient_noise_scale, rel=0.25)
    assert est.grad_sq_norm == pytest.approx(exact.grad_sq_norm, rel=1e-4)  # B = N: the full gradient


def test_two_batch_is_deterministic_given_seed() -> None:
    model, x, loss = _tiny_mlp(), _binary(40, 12), autoencoder_loss("bce")
    first = noise_scale(model, x, loss, "two_batch", seed=5)
    assert noise_scale(model, x, loss, "two_batch", seed=5) == first
    assert noise_scale(model, x, loss, "two_batch", seed=6).trace_cov != first.trace_cov
    assert noise_scale(model, x, loss, "exact") == noise_scale(model, x, loss, "exact")


# ------------------------------------------------------------------------------------------ invariance


@pytest.mark.parametrize("method", METHODS)
def test_scaling_the_loss_leaves_the_noise_scale_unchanged(method: str) -> None:
    model, x, loss = _tiny_mlp(), _binary(40, 12), autoencoder_loss("mse")
    base = noise_scale(model, x, loss, method, seed=1)
    scaled = noise_scale(model, x, _scaled(loss, 7.0), method, seed=1)
    assert scaled.grad_sq_norm == pytest.approx(49 * base.grad_sq_norm, rel=1e-5)
    assert scaled.trace_cov == pytest.approx(49 * base.trace_cov, rel=1e-4)
    assert scaled.gradient_noise_scale == pytest.approx(base.gradient_noise_scale, rel=1e-4)


# ------------------------------------------------------------------------------------- method choice


def test_choose_method_rule() -> None:
    assert choose_method(1000, 2000) == "exact"
    assert choose_method(1000, 2000, max_exact_cost=2e6) == "exact"  # at the threshold: still exact
    assert choose_method(1000, 2001, max_exact_cost=2e6) == "two_batch"
    assert choose_method(10**6, 10**6) == "two_batch"
    assert choose_method(10**6, 10**6, "exact") == "exact"  # explicit names pass through
    assert choose_method(2, 2, "two_batch") == "two_batch"


def test_auto_picks_by_cost() -> None:
    model, x, loss = _tiny_mlp(), _binary(20, 12), autoencoder_loss()
    n_params = sum(p.numel() for p in model.parameters())
    assert noise_scale(model, x, loss).method == "exact"
    assert noise_scale(model, x, loss, max_exact_cost=20 * n_params - 1).method == "two_batch"


def test_bad_method_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="auto.*exact.*two_batch"):
        choose_method(10, 10, "exaxt")
    with pytest.raises(ValueError, match="two_batch"):
        noise_scale(_tiny_mlp(), _binary(8, 12), autoencoder_loss(), "sampled")
    with pytest.raises(ValueError, match="mse"):
        autoencoder_loss("l1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"small_batch": 8, "big_batch": 8}, "small_batch"),
        ({"small_batch": 0}, "small_batch"),
        ({"big_batch": 11}, "big_batch"),
        ({"n_passes": 0}, "n_passes"),
    ],
)
def test_two_batch_rejects_bad_batch_sizes(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        noise_scale(_tiny_mlp(), _binary(10, 12), autoencoder_loss(), "two_batch", **kwargs)


def test_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        noise_scale(_tiny_mlp(), _binary(1, 12), autoencoder_loss())


# ---------------------------------------------------------------------------------- our models, vmap


@pytest.mark.parametrize("factory", [_tiny_conv, _tiny_vq], ids=["conv", "vq"])
def test_conv_and_vq_models(factory: Callable[[], nn.Module]) -> None:
    model, x, loss = factory(), _volumes(), autoencoder_loss("mse")
    results = {m: noise_scale(model, x, loss, m, n_passes=8) for m in METHODS}
    for method, r in results.items():
        assert r.method == method and r.n_samples == 6
        for value in (r.grad_sq_norm, r.trace_cov, r.gradient_noise_scale):
            assert math.isfinite(value) and value > 0
    # The mean of the vmapped single-sample gradients is the batch gradient (B = N), which checks that the
    # per-sample losses (VQ loss included) add up to the training loss.
    assert results["exact"].grad_sq_norm == pytest.approx(results["two_batch"].grad_sq_norm, rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_model_is_left_untouched(method: str) -> None:
    """Parameters, buffers and every module's mode survive; an uninitialised VQ model in training mode is
    not initialised from the data (the computation runs in eval mode)."""
    model = _tiny_vq(initialise=False)
    model.train()
    model.decoder.eval()  # mixed modes must come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    result = noise_scale(model, _volumes(), autoencoder_loss(), method, n_passes=4)
    assert math.isfinite(result.gradient_noise_scale)
    assert not bool(model.quantizer.initialised)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


def test_frozen_parameters_are_excluded() -> None:
    """Only parameters with requires_grad count, in both methods (a frozen parameter has no gradient)."""
    g = np.random.default_rng(4).normal(size=(9, 2))
    model = _Planted(2)
    model.frozen = nn.Parameter(torch.ones(3, dtype=torch.float64), requires_grad=False)
    for method in METHODS:
        got = noise_scale(model, torch.as_tensor(g), _planted_loss, method)
        assert got.grad_sq_norm == pytest.approx(_reference(g)[0], rel=1e-10)


def test_falls_back_to_two_batch_when_the_loss_does_not_vmap() -> None:
    base = autoencoder_loss()

    def not_vmappable(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
        if float(xb.sum()) < -1:  # data-dependent Python control flow: fine eagerly, an error under vmap
            raise AssertionError
        return base(model, xb)

    class NotOnlyLinear(nn.Module):  # a parameter outside any Linear: no fast path, the vmap one
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.gain = _tiny_mlp(), nn.Parameter(torch.ones(()))

        def forward(self, xb: torch.Tensor) -> Any:
            out = self.inner(xb)
            return type(out)(recon=out.recon * self.gain, latent=out.latent, aux_loss=out.aux_loss)

    model, x = NotOnlyLinear(), _binary(24, 12)
    with pytest.warns(RuntimeWarning, match="vmap"):
        got = noise_scale(model, x, not_vmappable, "exact", seed=3)
    assert got == noise_scale(model, x, base, "two_batch", seed=3)


def test_a_broken_loss_raises_instead_of_falling_back() -> None:
    def summed(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
        return autoencoder_loss()(model, xb).sum()  # a scalar, not one loss per sample

    for method in METHODS:
        with pytest.raises(ValueError, match="one loss per sample"):
            noise_scale(_tiny_mlp(), _binary(8, 12), summed, method)


def test_result_type() -> None:
    r = noise_scale(_Planted(1), torch.tensor([[0.0], [0.0]], dtype=torch.float64), _planted_loss, "exact")
    assert isinstance(r, NoiseScale)
    assert r.grad_sq_norm == 0 and math.isnan(r.gradient_noise_scale)  # |G|² = 0: no finite ratio


def test_linear_fast_path_equals_per_sample_gradients_from_torch_func() -> None:
    """An MLP's exact noise scale comes from one backward pass (outer-product norms); it must equal the
    torch.func per-sample computation, which the fast path skips."""
    from ae_batch.evaluation import noise_scale as module
    from ae_batch.models.components import MLPAutoencoder

    torch.manual_seed(0)
    model = MLPAutoencoder(30, (16, 8), 4)
    x = (torch.rand(200, 30) < 0.2).float()
    fast = module.noise_scale(model, x, module.autoencoder_loss("mse"), "exact", chunk_size=64)
    with module._eval_mode(model):  # noqa: SLF001 - the general path, called directly
        general = module._exact(model, x, module.autoencoder_loss("mse"), 64)  # noqa: SLF001
    assert fast.method == general.method == "exact"
    assert fast.grad_sq_norm == pytest.approx(general.grad_sq_norm, rel=1e-9)
    assert fast.trace_cov == pytest.approx(general.trace_cov, rel=1e-9)
    assert all(p.grad is None for p in model.parameters())  # the model is left as it was
