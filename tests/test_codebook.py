"""Codebook metrics on hand-made codes and codebooks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ae_batch.evaluation.codebook import (
    code_counts,
    codebook_mean_cosine,
    codebook_metrics,
    codebook_perplexity,
    codebook_usage,
    dead_codes,
)
from ae_batch.evaluation.diversity import exp_entropy, mean_abs_cosine, mean_pairwise_cosine


def test_uniform_use_of_all_codes() -> None:
    k = 8
    codes = np.tile(np.arange(k), 5).reshape(5, 2, 4)  # each code 5 times, any shape
    assert codebook_perplexity(codes, k) == pytest.approx(k)
    assert codebook_usage(codes, k) == 1.0
    assert dead_codes(codes, k) == 0


def test_single_code() -> None:
    k = 8
    codes = np.full((3, 4, 4, 4), 5)
    assert codebook_perplexity(codes, k) == pytest.approx(1.0)
    assert codebook_usage(codes, k) == pytest.approx(1 / k)
    assert dead_codes(codes, k) == k - 1


def test_half_half_over_two_of_four() -> None:
    codes = np.array([0, 3, 0, 3, 3, 0])
    assert codebook_perplexity(codes, 4) == pytest.approx(2.0)
    assert codebook_usage(codes, 4) == pytest.approx(0.5)
    assert dead_codes(codes, 4) == 2


def test_skewed_perplexity_exact() -> None:
    codes = np.array([0, 0, 0, 1])  # p = (3/4, 1/4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert codebook_perplexity(codes, 2) == pytest.approx(expected)
    assert 1.0 < expected < 2.0


def test_torch_codes_accepted() -> None:
    codes = torch.tensor([[0, 1], [2, 3]])
    assert codebook_perplexity(codes, 4) == pytest.approx(4.0)
    np.testing.assert_array_equal(code_counts(codes, 6), [1, 1, 1, 1, 0, 0])


@pytest.mark.parametrize(
    ("codes", "k", "match"),
    [
        (np.array([0, 4]), 4, "lie in"),
        (np.array([-1, 0]), 4, "lie in"),
        (np.array([], dtype=int), 4, "no codes"),
        (np.array([0.0, 1.0]), 4, "integers"),
        (np.array([0]), 0, "positive"),
    ],
)
def test_bad_codes(codes: np.ndarray, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codebook_perplexity(codes, k)


def test_orthonormal_codebook_cosine_zero() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))
    assert codebook_mean_cosine(q) == pytest.approx(0.0, abs=1e-12)
    assert codebook_mean_cosine(3.0 * np.eye(4)) == pytest.approx(0.0)


def test_identical_vectors_cosine_one() -> None:
    e = np.tile([[1.0, -2.0, 0.5]], (5, 1)) * np.array([[1.0], [2.0], [0.1], [7.0], [3.0]])  # scale-free
    assert codebook_mean_cosine(e) == pytest.approx(1.0)


def test_two_vector_exact_cosine() -> None:
    e = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert codebook_mean_cosine(e) == pytest.approx(1 / math.sqrt(2))
    e = np.array([[3.0, 4.0], [-4.0, 3.0], [3.0, 4.0]])  # pairs: 0, 1, 0 (each counted twice)
    assert codebook_mean_cosine(e) == pytest.approx(1 / 3)


def test_cosine_zero_vector_and_bad_shapes() -> None:
    assert codebook_mean_cosine(np.array([[0.0, 0.0], [1.0, 0.0]])) == pytest.approx(0.0)
    for bad in (np.ones((1, 3)), np.ones(3)):
        with pytest.raises(ValueError, match="K >= 2"):
            codebook_mean_cosine(bad)


def test_codebook_metrics_dict() -> None:
    codebook = torch.eye(4)
    codes = torch.tensor([0, 3, 0, 3])
    m = codebook_metrics(codes, codebook)
    assert set(m) == {"codebook_perplexity", "codebook_usage", "codebook_dead_codes", "codebook_mean_cosine"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["codebook_perplexity"] == pytest.approx(2.0)
    assert m["codebook_usage"] == pytest.approx(0.5)
    assert m["codebook_dead_codes"] == 2.0
    assert m["codebook_mean_cosine"] == pytest.approx(0.0)


def test_shared_helpers_give_the_codebook_metrics() -> None:
    """Perplexity is the exp-entropy of the code counts; mean cosine the signed pairwise cosine."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 6, size=200)
    assert codebook_perplexity(codes, 8) == exp_entropy(np.bincount(codes, minlength=8))
    e = rng.standard_normal((6, 3))
    assert codebook_mean_cosine(e) == mean_pairwise_cosine(e, absolute=False)


def test_codebook_cosine_is_signed_and_uncentred() -> None:
    """Code vectors that all point one way are a collapsed codebook, offset or not: no centring (unlike the
    latents' mean |cosine|), and opposite codes count as -1, not +1."""
    e = np.array([[10.0, 1.0], [10.0, -1.0]])
    assert codebook_mean_cosine(e) == pytest.approx(99 / 101)
    assert mean_abs_cosine(e) == pytest.approx(1.0)  # the latents' metric, centred: ±(0, 1)
    e = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert codebook_mean_cosine(e) == pytest.approx(-2 * 2 / 12)  # 2 opposite pairs (×2 orders) of 12
