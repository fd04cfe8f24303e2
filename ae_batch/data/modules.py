"""Batches for training and evaluation, sliced from tensors that sit on the device once.

Why not a ``TensorDataset`` DataLoader: per-sample collation costs more than the step itself at batch
size 1. Why chunks: Lightning's per-step machinery costs ~0.4 ms, as much as a whole optimizer step of a
small MLP at batch size 1, so each Lightning step carries a chunk of minibatches (about ``CHUNK_SAMPLES``
samples, sliced one at a time as the system iterates them) and the system takes one optimizer step per
minibatch. The optimizer still steps once per minibatch of ``batch_size`` samples; only Lightning's
bookkeeping is shared (measured: 256-sample chunks left 0.79× of a hand-written loop at batch 32,
2048-sample chunks 0.95–0.97×; ``benchmarks/train_throughput.py``).

Shuffle order: one permutation per (seed, epoch), the same for every batch size, from a private
generator (never the global RNG), so a run's order depends on nothing but its seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch

CHUNK_SAMPLES = 2048


def shuffle_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``n`` training samples for ``epoch`` (0-based) of training seed ``seed``."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=generator)


class ChunkedBatches:
    """An epoch of shuffled minibatches, grouped into chunks (lists of minibatch tensors).

    Lightning calls ``sampler.set_epoch(epoch)`` on it before every epoch.
    """

    def __init__(
        self, x: torch.Tensor, batch_size: int, seed: int, chunk_samples: int = CHUNK_SAMPLES
    ) -> None:
        self.x, self.batch_size, self.seed = x, int(batch_size), int(seed)
        self.steps_per_chunk = max(1, chunk_samples // self.batch_size)
        self.epoch = 0
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __len__(self) -> int:
        return -(-self.steps_per_epoch // self.steps_per_chunk)

    def __iter__(self) -> Iterator[MinibatchChunk]:
        order = shuffle_order(len(self.x), self.seed, self.epoch).to(self.x.device)
        index_batches = torch.split(order, self.batch_size)
        for start in range(0, len(index_batches), self.steps_per_chunk):
            yield MinibatchChunk(self.x, index_batches[start : start + self.steps_per_chunk])


class MinibatchChunk:
    """A few minibatches, sliced from ``x`` one at a time as they are iterated (never all at once)."""

    def __init__(self, x: torch.Tensor, index_batches: tuple[torch.Tensor, ...]) -> None:
        self.x, self.index_batches = x, index_batches

    def __len__(self) -> int:
        return len(self.index_batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for idx in self.index_batches:
            yield self.x[idx]


class InOrderBatches:
    """Fixed-size, unshuffled batches for validation and evaluation (independent of the training batch)."""

    def __init__(self, x: torch.Tensor, batch_size: int) -> None:
        self.x, self.batch_size = x, int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from torch.split(self.x, self.batch_size)


class TensorDataModule(pl.LightningDataModule):
    """Train/val tensors moved to the trainer's device once, in ``setup``."""

    def __init__(
        self, train: torch.Tensor, val: torch.Tensor, batch_size: int, seed: int, eval_batch_size: int = 256
    ):
        super().__init__()
        self.train_x, self.val_x = train, val
        self.batch_size, self.seed, self.eval_batch_size = batch_size, seed, eval_batch_size

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.train_x, self.val_x = self.train_x.to(device), self.val_x.to(device)

    def train_dataloader(self) -> ChunkedBatches:
        return ChunkedBatches(self.train_x, self.batch_size, self.seed)

    def val_dataloader(self) -> InOrderBatches:
        return InOrderBatches(self.val_x, self.eval_batch_size)
