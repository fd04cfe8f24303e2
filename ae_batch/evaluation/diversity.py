"""How spread out are the latents? Effective rank, participation ratio, mean |cosine| between subjects."""

from __future__ import annotations

import numpy as np


def effective_rank(latents: np.ndarray) -> float:
    """Roy & Vetterli (2007): exp(entropy of the normalised singular values of the centred matrix)."""
    x = np.asarray(latents, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    total = s.sum()
    if total <= 0:
        return 1.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def participation_ratio(latents: np.ndarray) -> float:
    """(Σλ)² / Σλ² of the covariance eigenvalues: the number of dimensions carrying the variance."""
    x = np.asarray(latents, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])), 0, None)
    denom = (eig**2).sum()
    return float(eig.sum() ** 2 / denom) if denom > 0 else 1.0


def mean_abs_cosine(latents: np.ndarray) -> float:
    """Mean |cosine similarity| over distinct pairs of subjects (lower = more diverse directions)."""
    x = np.asarray(latents, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = np.abs(unit @ unit.T)
    n = len(x)
    if n < 2:
        return float("nan")
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def latent_diversity(latents: np.ndarray) -> dict[str, float]:
    return {
        "latent_effective_rank": effective_rank(latents),
        "latent_participation_ratio": participation_ratio(latents),
        "latent_mean_abs_cosine": mean_abs_cosine(latents),
    }
