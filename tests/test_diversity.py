"""Latent diversity: effective rank, participation ratio and mean |cosine| on matrices with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ae_batch.evaluation.diversity import (
    effective_rank,
    latent_diversity,
    mean_abs_cosine,
    participation_ratio,
)

# Columns of a 4×4 Hadamard matrix other than the all-ones one: orthonormal AND zero-mean, so centring
# (which effective_rank and the covariance do) leaves X = U diag(s) V^T unchanged.
U = np.array([[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float).T / 2.0


def known_matrix(singular_values: list[float]) -> np.ndarray:
    k = len(singular_values)
    v = np.linalg.qr(np.random.default_rng(0).standard_normal((5, k)))[0]  # [5, k] orthonormal columns
    return U[:, :k] @ np.diag(singular_values) @ v.T  # [4, 5]


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


def test_mean_abs_cosine_known_cases() -> None:
    assert mean_abs_cosine(np.eye(5)) == 0.0
    assert mean_abs_cosine(np.tile([[1.0, 2.0, -3.0]], (6, 1))) == pytest.approx(1.0)
    # sign does not matter: opposite vectors have |cos| = 1
    assert mean_abs_cosine(np.array([[1.0, 1.0], [-2.0, -2.0]])) == pytest.approx(1.0)
    # vectors at 0°, 60° and 90°: pair angles 60°, 90°, 30° → |cos| = 0.5, 0, √3/2 (norms do not matter)
    x = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 3.0]])
    assert mean_abs_cosine(x) == pytest.approx((0.5 + 0.0 + math.sqrt(3) / 2) / 3)
    assert math.isnan(mean_abs_cosine(np.ones((1, 3))))


def test_latent_diversity_keys() -> None:
    out = latent_diversity(np.eye(4))
    assert set(out) == {"latent_effective_rank", "latent_participation_ratio", "latent_mean_abs_cosine"}
    assert out["latent_mean_abs_cosine"] == 0.0
