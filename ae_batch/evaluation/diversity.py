"""How spread out are the latents? Effective rank, participation ratio, mean |cosine|, dead units.

All of them describe the test subjects' latents ``[N, d]`` as a population: an offset shared by every
subject carries no information about any one of them, so each metric looks at the latents centred over
subjects. The two generic helpers, :func:`exp_entropy` and :func:`mean_pairwise_cosine`, are shared with
the codebook metrics (:mod:`ae_batch.evaluation.codebook`).
"""

from __future__ import annotations

import numpy as np

DEAD_UNIT_RTOL = 1e-8  # a unit is dead when its std over subjects is ≤ this × max(1, mean |value|)
_COSINE_BLOCK_ROWS = 2048  # rows of the Gram matrix held at once: memory O(block × N), not O(N²)


def exp_entropy(weights: np.ndarray) -> float:
    """exp(-Σ p log p) of ``p = weights / Σ weights``: the effective number of non-zero weights.

    1 when one weight holds everything, ``len(weights)`` when all are equal. Zero weights contribute
    nothing. This is the codebook perplexity (weights = code counts) and the effective rank (weights =
    singular values).
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights must not all be zero")
    p = w[w > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def mean_pairwise_cosine(x: np.ndarray, absolute: bool) -> float:
    """Mean cosine similarity (or mean |cosine| if ``absolute``) over ordered pairs of distinct rows.

    Rows are used as given (no centring: callers decide). A zero row has cosine 0 with every other row.
    NaN for fewer than two rows. The Gram matrix is built in blocks of rows, so N in the tens of thousands
    does not need N² memory at once.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [N, d] matrix, got shape {list(x.shape)}")
    n = len(x)
    if n < 2:
        return float("nan")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    if not absolute:  # Σ_ij u_i·u_j = |Σ_i u_i|²
        total = float(np.square(unit.sum(axis=0)).sum())
    else:
        total = 0.0
        for start in range(0, n, _COSINE_BLOCK_ROWS):
            total += float(np.abs(unit[start : start + _COSINE_BLOCK_ROWS] @ unit.T).sum())
    diagonal = float(np.square(unit).sum())  # u_i·u_i: 1 per non-zero row, 0 per zero row
    return (total - diagonal) / (n * (n - 1))


def _dead_mask(x: np.ndarray) -> np.ndarray:
    scale = np.maximum(1.0, np.abs(x).mean(axis=0))
    return x.std(axis=0) <= DEAD_UNIT_RTOL * scale


def dead_units(latents: np.ndarray) -> int:
    """Number of latent units constant over the subjects: std ≤ 1e-8 × max(1, mean |value|).

    The tolerance is relative for large values, because a column that holds one large constant picks up
    rounding noise when it is computed (or centred); below magnitude 1 it is absolute.
    """
    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"expected latents [N >= 1, d], got shape {list(x.shape)}")
    return int(_dead_mask(x).sum())


def effective_rank(latents: np.ndarray) -> float:
    """Roy & Vetterli (2007): exp(entropy of the normalised singular values of the centred matrix)."""
    x = np.asarray(latents, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    if s.sum() <= 0:
        return 1.0
    return exp_entropy(s)


def participation_ratio(latents: np.ndarray) -> float:
    """(Σλ)² / Σλ² of the covariance eigenvalues: the number of dimensions carrying the variance."""
    x = np.asarray(latents, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])), 0, None)
    denom = (eig**2).sum()
    return float(eig.sum() ** 2 / denom) if denom > 0 else 1.0


def mean_abs_cosine(latents: np.ndarray) -> float:
    """Mean |cosine| over distinct pairs of subjects of the **centred** latents (lower = more diverse).

    The mean over subjects is subtracted first: uncentred, a large offset shared by all subjects makes
    every pair look parallel (0.97 at batch size 100 in an earlier round) whatever the subjects' own
    variation. For isotropic variation in d dimensions the centred value is E|cos| of random directions,
    about sqrt(2 / (π d)). Dead units (see :func:`dead_units`) are left out, so the rounding noise that
    centring leaves in a constant column cannot masquerade as direction. NaN with fewer than two subjects or when no unit
    varies (no direction to compare).
    """
    x = np.asarray(latents, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    live = ~_dead_mask(x)
    if not live.any():
        return float("nan")
    centred = x[:, live] - x[:, live].mean(axis=0, keepdims=True)
    return mean_pairwise_cosine(centred, absolute=True)


def latent_diversity(latents: np.ndarray) -> dict[str, float]:
    """The summary columns ``latent_*`` of one set of latents ``[N, d]`` (flattened beyond 2-D)."""
    x = np.asarray(latents, dtype=np.float64)
    x = x.reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise ValueError(f"latents contain {int((~np.isfinite(x)).sum())} non-finite value(s)")
    return {
        "latent_effective_rank": effective_rank(x),
        "latent_participation_ratio": participation_ratio(x),
        "latent_mean_abs_cosine": mean_abs_cosine(x),
        "latent_dead_units": float(dead_units(x)) if len(x) >= 2 else float("nan"),
    }
