"""Shared initial states (``init_model``) and the per-(seed, epoch) shuffle order (``StackedBatches``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from ae_batch.config import ModelConfig, ProtocolConfig
from ae_batch.io import file_sha256
from ae_batch.models.factory import load_model
from ae_batch.stages.init import init_model
from ae_batch.training.batches import Cursor, StackedBatches, shuffle_order
from ae_batch.training.protocols import budget_for

MODEL = ModelConfig(kind="mlp", hidden_dims=(16,), latent_dim=4)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Any:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_init_same_seed_same_weights_different_seed_different(tmp_path: Path, tiny_prepared: Any) -> None:
    sha_a = init_model(tiny_prepared["events"], tmp_path / "a" / "seed0.pt", 0, MODEL)
    init_model(tiny_prepared["events"], tmp_path / "b" / "seed0.pt", 0, MODEL)
    init_model(tiny_prepared["events"], tmp_path / "c" / "seed1.pt", 1, MODEL)
    assert sha_a == file_sha256(tmp_path / "a" / "seed0.pt")
    a, b, c = (_state(tmp_path / d / n) for d, n in (("a", "seed0.pt"), ("b", "seed0.pt"), ("c", "seed1.pt")))
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[k], c[k]) for k in a)
    payload = torch.load(tmp_path / "a" / "seed0.pt", weights_only=False)
    assert payload["seed"] == 0
    assert tuple(payload["input_shape"]) == (a["encoder.0.weight"].shape[1],)


def test_init_same_seed_gives_byte_identical_files(tmp_path: Path, tiny_prepared: Any) -> None:
    # Regression: torch.save() to a path embeds the file's stem (here a random temporary name) in the
    # archive, so the bytes differed run to run; ae_batch.io.save_torch serialises to memory first.
    sha_a = init_model(tiny_prepared["events"], tmp_path / "a" / "seed0.pt", 0, MODEL)
    sha_b = init_model(tiny_prepared["events"], tmp_path / "b" / "seed0.pt", 0, MODEL)
    assert sha_a == sha_b
    assert (tmp_path / "a" / "seed0.pt").read_bytes() == (tmp_path / "b" / "seed0.pt").read_bytes()


def test_init_different_seed_differs_in_bytes(tmp_path: Path, tiny_prepared: Any) -> None:
    sha0 = init_model(tiny_prepared["events"], tmp_path / "seed0.pt", 0, MODEL)
    sha1 = init_model(tiny_prepared["events"], tmp_path / "seed1.pt", 1, MODEL)
    assert sha0 != sha1


def test_load_initial_model_restores_the_saved_state(tmp_path: Path, tiny_prepared: Any) -> None:
    init_model(tiny_prepared["events"], tmp_path / "seed3.pt", 3, MODEL)
    saved = _state(tmp_path / "seed3.pt")
    input_dim = saved["encoder.0.weight"].shape[1]
    torch.manual_seed(12345)  # a different global RNG state must not matter
    net = load_model(tmp_path / "seed3.pt", MODEL, (input_dim,), "sigmoid")
    for key, value in net.state_dict().items():
        assert torch.equal(value, saved[key]), key


# --- shuffle order ----------------------------------------------------------------------------------


def test_shuffle_order_is_a_deterministic_permutation() -> None:
    a = shuffle_order(50, seed=1, epoch=0)
    assert torch.equal(a, shuffle_order(50, seed=1, epoch=0))
    assert torch.equal(torch.sort(a).values, torch.arange(50))
    assert not torch.equal(a, torch.arange(50))
    assert not torch.equal(a, shuffle_order(50, seed=1, epoch=1))
    assert not torch.equal(a, shuffle_order(50, seed=2, epoch=0))


def test_shuffle_order_ignores_the_global_rng() -> None:
    torch.manual_seed(0)
    a = shuffle_order(30, seed=5, epoch=2)
    torch.manual_seed(999)
    torch.rand(10)
    assert torch.equal(a, shuffle_order(30, seed=5, epoch=2))


def _epoch_batches(
    n: int, batch_size: int, seeds: list[int], epoch: int, chunk: int = 2048, position: int = 0
):
    budget = budget_for(ProtocolConfig("p", "epochs", epochs=epoch + 1), batch_size, n)
    cursor = Cursor(epoch=epoch, position=position)
    loader = StackedBatches(seeds, budget, cursor, chunk_samples=chunk)
    return list(loader), loader


@pytest.mark.parametrize("batch_size", [1, 7, 50])
@pytest.mark.parametrize("chunk_samples", [10, 256])
def test_stacked_batches_cover_every_sample_once_in_each_members_order(
    batch_size: int, chunk_samples: int
) -> None:
    n, seeds = 50, [4, 9, 4]
    for epoch in (0, 1):
        chunks, loader = _epoch_batches(n, batch_size, seeds, epoch, chunk_samples)
        batches = [b for chunk in chunks for b in chunk]
        assert len(batches) == math.ceil(n / batch_size)
        assert all(b.shape == (3, batch_size) for b in batches[:-1])
        assert batches[-1].shape == (3, n - batch_size * (len(batches) - 1))
        for k, seed in enumerate(seeds):  # row k is member k's own (seed, epoch) order
            assert torch.equal(torch.cat([b[k] for b in batches]), shuffle_order(n, seed, epoch))
        per_chunk = max(1, chunk_samples // batch_size)
        assert all(len(c) == per_chunk for c in chunks[:-1])


def test_same_order_for_every_batch_size() -> None:
    orders = []
    for batch_size in (1, 3, 8, 40):
        chunks, _ = _epoch_batches(40, batch_size, [2], epoch=3)
        orders.append(torch.cat([b[0] for chunk in chunks for b in chunk]))
    assert all(torch.equal(orders[0], o) for o in orders[1:])


def test_a_resumed_epoch_starts_at_its_position() -> None:
    full, _ = _epoch_batches(30, 4, [1, 2], epoch=2)
    rest, _ = _epoch_batches(30, 4, [1, 2], epoch=2, position=3)
    full_batches = [b for c in full for b in c]
    rest_batches = [b for c in rest for b in c]
    assert len(rest_batches) == len(full_batches) - 3
    assert all(torch.equal(a, b) for a, b in zip(full_batches[3:], rest_batches, strict=True))


def test_a_step_budget_ends_with_a_partial_epoch() -> None:
    budget = budget_for(ProtocolConfig("p", "steps", steps=10), 4, 30)  # 8 steps per epoch
    assert (budget.steps_per_epoch, budget.epochs, budget.steps_in_epoch(1)) == (8, 2, 2)
    chunks = list(StackedBatches([0], budget, Cursor(epoch=1)))
    assert sum(len(c) for c in chunks) == 2
