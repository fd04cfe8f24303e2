"""Codebook statistics of a VQ model, computed over a whole held-out set (never per batch).

Per-batch perplexity is capped by the number of tokens in a batch, so it cannot be compared across batch
sizes; pass all the codes of the evaluation set at once.
"""

from __future__ import annotations

import numpy as np
import torch

from ae_batch.evaluation.diversity import exp_entropy, mean_pairwise_cosine

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def code_counts(codes: ArrayLike, codebook_size: int) -> np.ndarray:
    """How often each code ``0..codebook_size-1`` occurs in ``codes`` (any shape, integer values)."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be positive, got {codebook_size}")
    flat = _as_numpy(codes).reshape(-1)
    if flat.size == 0:
        raise ValueError("no codes given")
    if not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {flat.dtype}")
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size - 1}], got values in [{lo}, {hi}]")
    return np.bincount(flat.astype(np.int64), minlength=codebook_size)


def codebook_perplexity(codes: ArrayLike, codebook_size: int) -> float:
    """exp of the entropy of the code histogram, p_k = n_k / N: 1 (one code) to K (uniform use)."""
    return exp_entropy(code_counts(codes, codebook_size))


def codebook_usage(codes: ArrayLike, codebook_size: int) -> float:
    """Fraction of the ``codebook_size`` codes used at least once."""
    return float((code_counts(codes, codebook_size) > 0).mean())


def dead_codes(codes: ArrayLike, codebook_size: int) -> int:
    """Number of codes never used."""
    return int((code_counts(codes, codebook_size) == 0).sum())


def codebook_mean_cosine(codebook: ArrayLike) -> float:
    """Mean off-diagonal cosine similarity of the unit-normalised code vectors ``[K, D]`` (K >= 2).

    Signed and **uncentred**, unlike the latents' mean |cosine|: it describes the directions of the code
    vectors themselves in the embedding space the decoder reads. The K codes are fixed parameters, not a
    sample of subjects, so there is no population offset to remove, and a codebook whose vectors all point
    one way (mean cosine near 1) has genuinely collapsed, whatever their common offset. A zero vector has
    cosine 0 with every other vector.
    """
    e = _as_numpy(codebook).astype(np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"codebook must be [K, D] with K >= 2, got shape {list(e.shape)}")
    return mean_pairwise_cosine(e, absolute=False)


def codebook_metrics(codes: ArrayLike, codebook: ArrayLike) -> dict[str, float]:
    """Perplexity, usage, dead codes and mean cosine; K is taken from ``codebook.shape[0]``."""
    k = int(_as_numpy(codebook).shape[0])
    return {
        "codebook_perplexity": codebook_perplexity(codes, k),
        "codebook_usage": codebook_usage(codes, k),
        "codebook_dead_codes": float(dead_codes(codes, k)),
        "codebook_mean_cosine": codebook_mean_cosine(codebook),
    }
