"""Shared initial states (``init_model``) and the per-(seed, epoch) shuffle order (``ChunkedBatches``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from ae_batch.config import ModelConfig, TrainingConfig
from ae_batch.data.modules import ChunkedBatches, InOrderBatches, shuffle_order
from ae_batch.stages.init import file_sha256, init_model, load_initial_model

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
    net = load_initial_model(tmp_path / "seed3.pt", MODEL, (input_dim,), "sigmoid")
    for key, value in net.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_every_batch_size_records_the_same_init_sha(tmp_path: Path, tiny_prepared: Any) -> None:
    from ae_batch.stages.train import train_grid_point

    init = tmp_path / "init" / "seed0.pt"
    init_model(tiny_prepared["events"], init, 0, MODEL)
    expected = file_sha256(init)
    training = TrainingConfig(max_epochs=1, accelerator="cpu")
    records = [
        train_grid_point(
            tiny_prepared["events"], init, tmp_path / f"bs{bs}", "ehr", bs, 0, training, MODEL, progress=False
        )
        for bs in (4, 32)
    ]
    assert [r["init_sha256"] for r in records] == [expected, expected]
    assert file_sha256(init) == expected  # training never rewrites the initial state


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


@pytest.mark.parametrize("batch_size", [1, 7, 50])
@pytest.mark.parametrize("chunk_samples", [10, 256])
def test_chunked_batches_cover_every_sample_once_in_shuffle_order(
    batch_size: int, chunk_samples: int
) -> None:
    n, seed = 50, 4
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)  # row i holds the value i
    loader = ChunkedBatches(x, batch_size, seed, chunk_samples=chunk_samples)
    assert loader.steps_per_epoch == math.ceil(n / batch_size)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        chunks = list(loader)
        assert len(chunks) == len(loader)
        batches = [b for chunk in chunks for b in chunk]
        assert len(batches) == math.ceil(n / batch_size)
        assert all(len(b) == batch_size for b in batches[:-1])
        assert len(batches[-1]) == n - batch_size * (len(batches) - 1)
        seen = torch.cat(batches)[:, 0].long()
        assert torch.equal(seen, shuffle_order(n, seed, epoch))
        assert torch.equal(torch.sort(seen).values, torch.arange(n))
        # each chunk carries at least chunk_samples samples' worth of steps (except the last)
        per_chunk = max(1, chunk_samples // batch_size)
        assert all(len(c) == per_chunk for c in chunks[:-1])
    assert loader.sampler is loader  # Lightning calls loader.sampler.set_epoch


def test_same_order_for_every_batch_size() -> None:
    x = torch.arange(40, dtype=torch.float32)[:, None]
    orders = []
    for batch_size in (1, 3, 8, 40):
        loader = ChunkedBatches(x, batch_size, seed=2)
        loader.set_epoch(3)
        orders.append(torch.cat([b for chunk in loader for b in chunk])[:, 0])
    assert all(torch.equal(orders[0], o) for o in orders[1:])


def test_in_order_batches_are_unshuffled() -> None:
    x = torch.arange(10, dtype=torch.float32)[:, None]
    batches = list(InOrderBatches(x, 4))
    assert [len(b) for b in batches] == [4, 4, 2] and len(InOrderBatches(x, 4)) == 3
    assert torch.equal(torch.cat(batches), x)
