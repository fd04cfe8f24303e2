"""Gradient noise scale of a training loss over a training set (McCandlish et al. 2018, "simple" version).

``B_simple = tr(Σ) / |G|²``: ``G`` is the full-training-set gradient (the mean of the per-sample gradients
``g_i`` over the ``N`` training samples) and ``Σ`` the covariance of the per-sample gradients. It is the batch
size at which the gradient noise of a minibatch is about as large as the gradient itself: far below it,
doubling the batch nearly halves the steps needed; far above it, a bigger batch buys almost nothing. The
study varies the batch size, so this tells whether its batch sizes lie in the noise-dominated regime.

Two ways to compute it, returning the same quantities (so their numbers can be compared directly):

* ``exact``: every per-sample gradient via ``torch.func`` (``vmap(grad(functional_call(...)))``), chunk by
  chunk; only the float64 sum of the gradients and the float64 sum of their squared norms are kept, never the
  ``N × P`` matrix. ``|G|² = ||ḡ||²`` and ``tr(Σ) = (Σ_i ||g_i||² − N ||ḡ||²) / (N − 1)``.
* ``two_batch``: squared norms of minibatch gradients at a small and a big batch size (McCandlish et al.,
  appendix A), with the finite-population correction that makes it estimate the *same* ``tr(Σ)`` (the
  unbiased, ``N − 1`` covariance of the training set) and ``|G|²`` without bias; see :func:`noise_scale`.
  Its cost is a few passes of ordinary forward/backward over the data, whatever the number of parameters.

``method="auto"`` picks ``exact`` while ``n_samples × n_params`` stays below ``max_exact_cost``
(:func:`choose_method`), and falls back to ``two_batch`` with a ``RuntimeWarning`` if the model does not run
under ``vmap``.

The model is put in eval mode for the computation (so the VQ model's data-dependent codebook init never runs
and nothing behaves differently per batch) and every module's mode is restored afterwards; parameters and
buffers are only read.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ae_batch.models.losses import per_sample_loss as _reconstruction_per_sample_loss

PerSampleLoss = Callable[[nn.Module, torch.Tensor], torch.Tensor]

METHODS = ("auto", "exact", "two_batch")
DEFAULT_SMALL_BATCH = 8
# Enough small batches for a stable mean of ||G_b||^2 on small training sets; on large ones one pass over
# the data already gives N / b batches (the number of passes grows only while N / b < this).
MIN_SMALL_BATCHES = 64


@dataclass(frozen=True)
class NoiseScale:
    """The gradient noise scale and the two quantities it is the ratio of (all over the training set)."""

    grad_sq_norm: float  # |G|^2: squared norm of the mean per-sample gradient
    trace_cov: float  # tr(Σ): trace of the unbiased (N − 1) covariance of the per-sample gradients
    gradient_noise_scale: float  # tr(Σ) / |G|^2 (nan if |G|^2 <= 0)
    method: str  # "exact" or "two_batch" (the method actually used, after any fallback)
    n_samples: int


def choose_method(n_samples: int, n_params: int, method: str = "auto", max_exact_cost: float = 2e10) -> str:
    """``exact`` or ``two_batch``.

    ``auto`` gives ``exact`` when ``n_samples * n_params <= max_exact_cost``: the exact method's time and
    memory traffic grow with the number of per-sample gradient entries it produces, while the two-batch
    estimate costs a few ordinary passes. Explicit names pass through unchanged.
    """
    if method not in METHODS:
        raise ValueError(f"unknown noise-scale method {method!r}; expected one of {list(METHODS)}")
    if method != "auto":
        return method
    return "exact" if n_samples * n_params <= max_exact_cost else "two_batch"


def _autoencoder_loss(model: nn.Module, xb: torch.Tensor, kind: str) -> torch.Tensor:
    out = model(xb)
    return _reconstruction_per_sample_loss(out.recon, xb, kind) + out.aux_loss


def autoencoder_loss(kind: str = "mse") -> PerSampleLoss:
    """Per-sample training loss of one of our autoencoders: reconstruction loss + ``aux_loss``.

    ``aux_loss`` (the VQ loss; 0 for a plain AE) is a batch mean of per-sample terms with equal weights, so
    the mean over a batch of these per-sample losses is exactly the training loss of that batch, and for a
    batch of one sample (as each vmapped call of the exact method sees) ``aux_loss`` is that sample's term.
    """
    if kind not in ("mse", "bce"):
        raise ValueError(f"unknown loss {kind!r}; expected 'mse' or 'bce'")
    return partial(_autoencoder_loss, kind=kind)


class _LossModule(nn.Module):
    """Wraps (model, per_sample_loss) so ``functional_call`` can swap the model's parameters and buffers
    while a user-supplied loss function (which calls ``model(...)`` itself) runs."""

    def __init__(self, model: nn.Module, loss_fn: PerSampleLoss) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return _checked(self.loss_fn(self.model, xb), xb.shape[0])


def _checked(losses: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (batch,):
        shape = list(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"per_sample_loss must return one loss per sample, shape [{batch}], for a batch of {batch}; got {shape}"
        )
    return losses


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards every submodule gets back its own previous mode (mixed modes too)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=True): no gradient to measure")
    return params


def _result(grad_sq_norm: float, trace_cov: float, method: str, n: int) -> NoiseScale:
    gns = trace_cov / grad_sq_norm if grad_sq_norm > 0 else math.nan
    return NoiseScale(float(grad_sq_norm), float(trace_cov), float(gns), method, int(n))


# --------------------------------------------------------------------------------------------- exact


def _per_sample_grad_fn(
    model: nn.Module, loss_fn: PerSampleLoss
) -> tuple[Callable[[torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A function chunk ``[c, ...]`` → dict of per-sample gradients ``[c, *param.shape]``."""
    wrapper = _LossModule(model, loss_fn)
    trainable = {f"model.{n}": p.detach() for n, p in _trainable(model).items()}
    # Frozen parameters and buffers (e.g. the VQ quantiser's ``initialised`` flag) go through
    # functional_call as constants, so the swapped-in module is complete and nothing reads stale state.
    constants = {f"model.{n}": p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    constants.update({f"model.{n}": b for n, b in model.named_buffers()})

    def one_sample_loss(params: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(wrapper, (params, constants), (xi.unsqueeze(0),)).sum()

    per_sample = vmap(grad(one_sample_loss), in_dims=(None, 0))
    return (lambda chunk: per_sample(trainable, chunk)), trainable


def _exact(model: nn.Module, x: torch.Tensor, loss_fn: PerSampleLoss, chunk_size: int) -> NoiseScale:
    n = x.shape[0]
    fn, trainable = _per_sample_grad_fn(model, loss_fn)
    device = x.device
    grad_sum = {k: torch.zeros(p.numel(), dtype=torch.float64, device=device) for k, p in trainable.items()}
    sq_norm_sum = torch.zeros((), dtype=torch.float64, device=device)
    rows = min(chunk_size, n)
    # One reused float64 buffer for the per-sample gradients of one parameter at a time: converting into
    # preallocated memory and reducing with BLAS (addmv for the sum, dot for the squared norms) is several
    # times faster than fresh ``.double()`` copies with ``sum``/``pow`` (measured: the float64 bookkeeping,
    # not the gradients, dominated the MLP's time).
    buffer = torch.empty(
        rows * max(p.numel() for p in trainable.values()), dtype=torch.float64, device=device
    )
    ones = torch.ones(rows, dtype=torch.float64, device=device)
    with torch.enable_grad():
        for start in range(0, n, chunk_size):
            grads = fn(x[start : start + chunk_size])
            for k, g in grads.items():
                c = g.shape[0]
                g64 = buffer[: g.numel()].view(c, -1)
                g64.copy_(g.detach().reshape(c, -1))
                grad_sum[k].addmv_(g64.t(), ones[:c])
                flat = g64.view(-1)
                sq_norm_sum += torch.dot(flat, flat)
    mean_sq = sum(float((s / n).pow(2).sum()) for s in grad_sum.values())
    trace = (float(sq_norm_sum) - n * mean_sq) / (n - 1)
    return _result(mean_sq, trace, "exact", n)


def _linear_only(model: nn.Module, trainable: dict[str, torch.Tensor]) -> list[nn.Linear] | None:
    """The model's Linear layers if every trainable parameter belongs to one (an MLP), else None."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owned = {id(p) for m in linears for p in m.parameters()}
    if not linears or any(id(p) not in owned for p in trainable.values()):
        return None
    return linears


def _exact_linear(
    model: nn.Module, linears: list[nn.Linear], x: torch.Tensor, loss_fn: PerSampleLoss, chunk_size: int
) -> NoiseScale:
    """The exact method for a model whose parameters are all in Linear layers fed ``[N, features]``.

    A Linear layer's per-sample weight gradient is the outer product δ_i a_iᵀ of the gradient at its
    output and its input, so ``||g_i||² = Σ_layers ||δ_i||² (||a_i||² + 1)`` (the 1: the bias) and
    ``Σ_i g_i = Σ_layers δᵀ a`` come from one ordinary forward and backward pass of the summed per-sample
    losses, without materialising any per-sample gradient (Goodfellow 2015). Same numbers as the
    ``torch.func`` path (a test holds them together), tens of times faster.
    """
    n = x.shape[0]
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(linears):
        handles.append(
            layer.register_forward_hook(lambda m, a, out, i=i: inputs.__setitem__(i, a[0].detach()))
        )
        handles.append(
            layer.register_full_backward_hook(lambda m, gi, go, i=i: outputs.__setitem__(i, go[0].detach()))
        )
    sums = [
        [torch.zeros_like(p, dtype=torch.float64) for p in (m.weight, m.bias) if p is not None]
        for m in linears
    ]
    sq = torch.zeros((), dtype=torch.float64, device=x.device)
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
            for start in range(0, n, chunk_size):
                xb = x[start : start + chunk_size]
                model.zero_grad(set_to_none=True)
                _checked(loss_fn(model, xb), len(xb)).sum().backward()
                for i, layer in enumerate(linears):
                    a, d = inputs[i].double(), outputs[i].double()
                    if a.dim() != 2:
                        raise ValueError("Linear layer input is not [N, features]")
                    per = d.pow(2).sum(1) * (a.pow(2).sum(1) + (1.0 if layer.bias is not None else 0.0))
                    sq += per.sum()
                    sums[i][0] += d.t() @ a
                    if layer.bias is not None:
                        sums[i][1] += d.sum(0)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    mean_sq = sum(float((t / n).pow(2).sum()) for layer in sums for t in layer)
    trace = (float(sq) - n * mean_sq) / (n - 1)
    return _result(mean_sq, trace, "exact", n)


def _vmap_problem(model: nn.Module, x: torch.Tensor, loss_fn: PerSampleLoss) -> str | None:
    """Why the exact method cannot run (the error of a one-sample vmapped probe), or None if it can.

    A failure that the plain (non-vmapped) loss shows as well is not a vmap limitation: it is raised.
    """
    try:
        with torch.enable_grad():
            _per_sample_grad_fn(model, loss_fn)[0](x[:1])
        return None
    except Exception as exc:  # any failure under vmap means: use the other method
        reason = f"{type(exc).__name__}: {exc}"
    with torch.no_grad():
        _checked(loss_fn(model, x[:1]), 1)  # raises if the loss itself is broken
    return reason


# ----------------------------------------------------------------------------------------- two-batch


def _batch_grad_sq_norm(
    model: nn.Module, params: list[torch.Tensor], loss_fn: PerSampleLoss, xb: torch.Tensor, chunk_size: int
) -> float:
    """||∇ mean-loss of the batch xb||², accumulating the gradient of the summed loss over chunks."""
    total: list[torch.Tensor] = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
    with torch.enable_grad():
        for start in range(0, xb.shape[0], chunk_size):
            xc = xb[start : start + chunk_size]
            losses = _checked(loss_fn(model, xc), xc.shape[0])
            grads = torch.autograd.grad(losses.sum(), params, allow_unused=True)
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc += g.detach().to(torch.float64)
    return sum(float((acc / xb.shape[0]).pow(2).sum()) for acc in total)


def _mean_batch_sq_norm(
    model: nn.Module,
    params: list[torch.Tensor],
    loss_fn: PerSampleLoss,
    x: torch.Tensor,
    batch: int,
    n_passes: int,
    generator: torch.Generator,
    chunk_size: int,
) -> float:
    """Mean of ||G_batch||² over the disjoint batches of ``n_passes`` random permutations (remainder
    dropped); with ``batch == N`` the full-set gradient, computed once (there is nothing to sample)."""
    n = x.shape[0]
    if batch == n:
        return _batch_grad_sq_norm(model, params, loss_fn, x, chunk_size)
    values = []
    for _ in range(n_passes):
        perm = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n - batch + 1, batch):
            values.append(
                _batch_grad_sq_norm(model, params, loss_fn, x[perm[start : start + batch]], chunk_size)
            )
    return sum(values) / len(values)


def _two_batch(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: PerSampleLoss,
    small: int | None,
    big: int | None,
    seed: int,
    n_passes: int | None,
    chunk_size: int,
) -> NoiseScale:
    n = x.shape[0]
    big = n if big is None else int(big)
    if not 2 <= big <= n:
        raise ValueError(f"big_batch must lie in [2, {n}] (the number of samples), got {big}")
    small = min(DEFAULT_SMALL_BATCH, big // 2) if small is None else int(small)
    if not 1 <= small < big:
        raise ValueError(f"small_batch must lie in [1, big_batch - 1] = [1, {big - 1}], got {small}")
    if n_passes is None:
        n_passes = math.ceil(MIN_SMALL_BATCHES / (n // small))
    if n_passes < 1:
        raise ValueError(f"n_passes must be >= 1, got {n_passes}")

    params = list(_trainable(model).values())
    generator = torch.Generator().manual_seed(int(seed))
    args = (model, params, loss_fn, x)
    sq_small = _mean_batch_sq_norm(*args, small, n_passes, generator, chunk_size)
    sq_big = _mean_batch_sq_norm(*args, big, n_passes, generator, chunk_size)
    # Without replacement from N samples: E||G_b||² = |G|² + tr(Σ)·(1/b − 1/N), tr(Σ) the (N − 1) covariance.
    trace = (sq_small - sq_big) / (1 / small - 1 / big)
    grad_sq = (big * sq_big - small * sq_small) / (big - small) + trace / n
    return _result(grad_sq, trace, "two_batch", n)


# ------------------------------------------------------------------------------------------- public


def noise_scale(
    model: nn.Module,
    x: torch.Tensor,
    per_sample_loss: PerSampleLoss,
    method: str = "auto",
    *,
    chunk_size: int = 256,
    small_batch: int | None = None,
    big_batch: int | None = None,
    seed: int = 0,
    max_exact_cost: float = 2e10,
    n_passes: int | None = None,
) -> NoiseScale:
    """Gradient noise scale ``B_simple = tr(Σ)/|G|²`` of ``per_sample_loss`` over the training samples ``x``.

    ``per_sample_loss(model, xb)`` returns the loss of each sample of ``xb``, shape ``[len(xb)]``; the training
    loss of a minibatch must be its mean (true of :func:`autoencoder_loss`). Gradients are taken with respect
    to the parameters with ``requires_grad``; the model runs in eval mode and is left as it was.

    Both methods report the same quantities, defined over the ``N`` samples of ``x``:
    ``|G|² = ||ḡ||²`` with ``ḡ = (1/N) Σ g_i`` and ``tr(Σ) = Σ_i ||g_i − ḡ||² / (N − 1)``.

    ``exact`` computes them from every per-sample gradient (calling ``per_sample_loss`` on single samples,
    ``xb`` of shape ``[1, ...]``, under ``torch.func.vmap``), ``chunk_size`` samples at a time, accumulated in
    float64. If the model fails under vmap, a ``RuntimeWarning`` gives the reason and ``two_batch`` is used.

    ``two_batch`` estimates them from the squared norms of minibatch gradients (the gradient of the mean loss
    of a batch), at a small batch size ``b`` (default ``min(8, B // 2)``) and a big one ``B`` (default ``N``).
    Each of ``n_passes`` passes draws a random permutation of the samples (``torch.Generator`` seeded with
    ``seed``, so the result is deterministic) and cuts it into ``N // b`` disjoint batches of ``b`` (the
    remainder is dropped); the default number of passes gives at least 64 small batches. Big batches are
    drawn the same way, except that ``B = N`` is the whole set, computed once. Each batch is a simple random
    sample *without replacement*, for which ``E||G_b||² = |G|² + tr(Σ)·(1/b − 1/N)`` exactly. Hence, with
    ``m_b``, ``m_B`` the mean squared norms,

    * ``tr(Σ) ≈ (m_b − m_B) / (1/b − 1/B)`` is unbiased for the ``N − 1`` covariance trace above, and
    * ``|G|² ≈ (B·m_B − b·m_b) / (B − b) + tr(Σ)≈ / N`` is unbiased for ``||ḡ||²`` (McCandlish et al.'s formula
      without the last term assumes sampling with replacement and would be low by ``tr(Σ)/N``; with
      ``B = N`` the corrected estimate equals ``||G_N||²`` exactly).

    Their ratio is a consistent but not unbiased estimate of ``B_simple``; with few batches ``tr(Σ)`` can
    even come out negative (reported as is). ``gradient_noise_scale`` is nan when ``|G|² <= 0``.

    ``method="auto"`` chooses by :func:`choose_method` (``n_samples × n_trainable_params`` against
    ``max_exact_cost``).
    """
    if x.dim() < 1 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to estimate a covariance, got x of shape {list(x.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = int(x.shape[0])
    n_params = sum(p.numel() for p in _trainable(model).values())
    chosen = choose_method(n, n_params, method, max_exact_cost)

    with _eval_mode(model):
        linears = _linear_only(model, _trainable(model)) if chosen == "exact" and x.dim() == 2 else None
        if linears is not None:
            return _exact_linear(model, linears, x, per_sample_loss, chunk_size)
        if chosen == "exact":
            problem = _vmap_problem(model, x, per_sample_loss)
            if problem is None:
                return _exact(model, x, per_sample_loss, chunk_size)
            warnings.warn(
                f"exact gradient noise scale: the model/loss does not run under torch.func.vmap ({problem}); "
                "falling back to the two-batch estimator",
                RuntimeWarning,
                stacklevel=2,
            )
        return _two_batch(model, x, per_sample_loss, small_batch, big_batch, seed, n_passes, chunk_size)
