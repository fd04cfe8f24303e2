"""Latent diversity: effective rank, participation ratio, centred mean |cosine| and dead units on matrices
with known answers, plus the shared helpers (exp-entropy, pairwise cosine)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ae_batch.evaluation.diversity import (
    dead_units,
    effective_rank,
    exp_entropy,
    latent_diversity,
    mean_abs_cosine,
    mean_pairwise_cosine,
    participation_ratio,
)

# Columns of a 4×4 Hadamard matrix other than the all-ones one: orthonormal AND zero-mean, so centring
# (which effective_rank and the covariance do) leaves X = U diag(s) V^T unchanged.
U = np.array([[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float).T / 2.0


def known_matrix(singular_values: list[float]) -> np.ndarray:
    k = len(singular_values)
    v = np.linalg.qr(np.random.default_rng(0).standard_normal((5, k)))[0]  # [5, k] orthonormal columns
    return U[:, :k] @ np.diag(singular_values) @ v.T  # [4, 5]


def expected_abs_cosine(d: int) -> float:
    """E|cos| between two independent isotropic Gaussian vectors in d dimensions: Γ(d/2) / (√π Γ((d+1)/2))."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def test_effective_rank_of_a_known_matrix() -> None:
    x = known_matrix([3.0, 1.0])
    np.testing.assert_allclose(np.linalg.svd(x - x.mean(0), compute_uv=False)[:2], [3.0, 1.0])
    p = np.array([0.75, 0.25])
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert effective_rank(x) == pytest.approx(1.7547648, rel=1e-6)
    assert effective_rank(known_matrix([2.0, 2.0, 2.0])) == pytest.approx(3.0, rel=1e-9)


def test_effective_rank_ignores_an_offset() -> None:
    x = known_matrix([3.0, 1.0])
    assert effective_rank(x + 100.0) == pytest.approx(effective_rank(x), rel=1e-9)


def test_effective_rank_of_rank_one_is_one() -> None:
    rng = np.random.default_rng(1)
    x = np.outer(rng.standard_normal(50), rng.standard_normal(6)) + rng.standard_normal(6)  # rank 1 + offset
    assert effective_rank(x) == pytest.approx(1.0, abs=1e-6)


def test_effective_rank_of_isotropic_gaussian_is_near_d() -> None:
    x = np.random.default_rng(0).standard_normal((2000, 8))
    # singular values of a 2000×8 Gaussian spread by about ±sqrt(8/2000) ≈ ±6%: entropy loss is tiny
    assert 7.95 < effective_rank(x) <= 8.0


def test_effective_rank_of_constant_matrix_is_one() -> None:
    assert effective_rank(np.ones((10, 4))) == 1.0


def test_participation_ratio_known_cases() -> None:
    # covariance eigenvalues s²/(n-1) = 9/3, 1/3 → (10/3)² / (82/9) = 100/82
    assert participation_ratio(known_matrix([3.0, 1.0])) == pytest.approx(100 / 82, rel=1e-9)
    assert participation_ratio(known_matrix([2.0, 2.0, 2.0])) == pytest.approx(3.0, rel=1e-9)
    rng = np.random.default_rng(1)
    assert participation_ratio(np.outer(rng.standard_normal(40), rng.standard_normal(5))) == pytest.approx(
        1.0
    )
    assert 7.8 < participation_ratio(np.random.default_rng(0).standard_normal((2000, 8))) <= 8.0
    assert participation_ratio(np.ones((5, 3))) == 1.0
    assert math.isnan(participation_ratio(np.ones((1, 3))))
    # one latent dimension: no crash, ratio 1
    assert participation_ratio(np.arange(10.0)[:, None]) == pytest.approx(1.0)


# --- exp-entropy and pairwise cosine: the helpers shared with the codebook metrics --------------------


def test_exp_entropy_known_cases() -> None:
    assert exp_entropy(np.ones(7)) == pytest.approx(7.0)
    assert exp_entropy(np.array([0.0, 5.0, 0.0])) == 1.0
    assert exp_entropy(np.array([3.0, 1.0])) == pytest.approx(
        math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    )
    # zero weights do not count; only proportions matter
    assert exp_entropy(np.array([2.0, 0.0, 2.0, 0.0])) == pytest.approx(2.0)
    assert exp_entropy(np.array([10, 30])) == pytest.approx(exp_entropy(np.array([0.25, 0.75])))
    for bad in (np.zeros(3), np.array([1.0, -1.0]), np.array([1.0, np.nan])):
        with pytest.raises(ValueError):
            exp_entropy(bad)


def test_mean_pairwise_cosine_signed_and_absolute() -> None:
    # vectors at 0°, 60° and 90°: pair cosines 0.5, 0, √3/2 (norms do not matter, no centring)
    x = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 3.0]])
    expected = (0.5 + 0.0 + math.sqrt(3) / 2) / 3
    assert mean_pairwise_cosine(x, absolute=False) == pytest.approx(expected)
    assert mean_pairwise_cosine(x, absolute=True) == pytest.approx(expected)
    opposite = np.array([[1.0, 1.0], [-2.0, -2.0]])
    assert mean_pairwise_cosine(opposite, absolute=False) == pytest.approx(-1.0)
    assert mean_pairwise_cosine(opposite, absolute=True) == pytest.approx(1.0)
    # a zero row has cosine 0 with everything: pairs (a,b)=1, (a,0)=0, (b,0)=0
    assert mean_pairwise_cosine(
        np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]), absolute=True
    ) == pytest.approx(1 / 3)
    assert mean_pairwise_cosine(np.eye(5), absolute=True) == 0.0
    assert math.isnan(mean_pairwise_cosine(np.ones((1, 3)), absolute=True))


def test_mean_pairwise_cosine_in_blocks_equals_the_full_gram_matrix() -> None:
    x = np.random.default_rng(2).standard_normal((2500, 3))  # more rows than one Gram block
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    g = u @ u.T
    n = len(x)
    assert mean_pairwise_cosine(x, absolute=True) == pytest.approx(
        (np.abs(g).sum() - np.trace(g)) / (n * (n - 1)), rel=1e-10
    )
    assert mean_pairwise_cosine(x, absolute=False) == pytest.approx(
        (g.sum() - np.trace(g)) / (n * (n - 1)), abs=1e-12
    )


# --- mean |cosine| of latents: centred over subjects --------------------------------------------------


def test_shared_offset_is_not_similarity() -> None:
    """Planted: latents = large shared offset + isotropic noise. Uncentred mean |cos| ≈ 0.99 (the offset);
    centred it is E|cos| of random directions in d dims (≈ 0.20 for d = 16). Catches uncentred cosine."""
    rng = np.random.default_rng(0)
    d = 16
    x = 10.0 * rng.standard_normal(d) + rng.standard_normal((400, d))
    assert mean_pairwise_cosine(x, absolute=True) > 0.95  # what the old, uncentred metric reported
    assert mean_abs_cosine(x) == pytest.approx(expected_abs_cosine(d), rel=0.05)
    assert latent_diversity(x)["latent_mean_abs_cosine"] == pytest.approx(expected_abs_cosine(d), rel=0.05)


def test_mean_abs_cosine_known_centred_cases() -> None:
    # zero-mean rows ±a, ±b with a ⟂ b: |cos| 1 for the 2 opposite pairs, 0 for the other 4 → 1/3,
    # whatever offset every subject shares
    c = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    assert mean_abs_cosine(c) == pytest.approx(1 / 3)
    assert mean_abs_cosine(c + np.array([50.0, -7.0])) == pytest.approx(1 / 3)
    # ±a, ±b with a, b at 60°: |cos| 1 (2 pairs), 1/2 (4 pairs) → (2 + 4 · 0.5) / 6
    a, b = np.array([1.0, 0.0]), np.array([0.5, math.sqrt(3) / 2])
    assert mean_abs_cosine(np.stack([a, b, -a, -b]) + 3.0) == pytest.approx(2 / 3)
    # one-hot subjects: centred rows e_i - 1/5 have cos -1/4 with each other
    assert mean_abs_cosine(np.eye(5)) == pytest.approx(0.25)
    assert math.isnan(mean_abs_cosine(np.ones((1, 3))))


def test_mean_abs_cosine_ignores_dead_units() -> None:
    """A constant unit adds nothing after centring, even when its large value leaves rounding noise."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 4))
    with_dead = np.column_stack([x, np.full(30, 1e6 / 3), np.zeros(30)])
    assert mean_abs_cosine(with_dead) == pytest.approx(mean_abs_cosine(x), rel=1e-12)
    # every unit constant: no direction to compare
    assert math.isnan(mean_abs_cosine(np.tile(rng.standard_normal(4) * 1e3, (20, 1)).astype(np.float32)))


# --- dead units ---------------------------------------------------------------------------------------


def test_dead_units_planted_constant_columns() -> None:
    """Planted: 8 units, of which 4 are constant over subjects (0; a large constant with float noise far
    below its 1e-8 relative tolerance; a tiny absolute wobble below 1e-8; an exact repeated value) and 4
    vary (including one whose variation is small but real: std 1e-6)."""
    rng = np.random.default_rng(0)
    n = 50
    x = rng.standard_normal((n, 8))
    x[:, 1] = 0.0
    x[:, 3] = 1e6 / 3 + 1e-6 * rng.standard_normal(n)  # std 1e-6 ≤ 1e-8 × 3.3e5
    x[:, 5] = 1e-10 * rng.standard_normal(n)  # std 1e-10 ≤ 1e-8 × 1
    x[:, 6] = -2.5
    x[:, 7] = 1e-6 * rng.standard_normal(n)  # alive: 1e-6 > 1e-8
    assert dead_units(x) == 4
    out = latent_diversity(x)
    assert out["latent_dead_units"] == 4.0
    assert dead_units(rng.standard_normal((n, 8))) == 0
    assert dead_units(np.ones((n, 3), dtype=np.float32)) == 3


def test_latent_diversity_keys() -> None:
    out = latent_diversity(np.eye(4))
    assert set(out) == {
        "latent_effective_rank",
        "latent_participation_ratio",
        "latent_mean_abs_cosine",
        "latent_dead_units",
    }
    assert all(isinstance(v, float) for v in out.values())
    assert out["latent_mean_abs_cosine"] == pytest.approx(1 / 3)  # centred one-hot in 4 dims: cos -1/3
    assert out["latent_dead_units"] == 0.0
    one = latent_diversity(np.ones((1, 3)))
    assert math.isnan(one["latent_dead_units"]) and math.isnan(one["latent_mean_abs_cosine"])
    # latents beyond 2-D are flattened per subject
    assert latent_diversity(np.ones((6, 2, 2)))["latent_dead_units"] == 4.0


def test_latent_diversity_rejects_non_finite() -> None:
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        latent_diversity(x)
