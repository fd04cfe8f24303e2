"""Minibatch indices for stacked training: each member's own shuffle order, grouped into chunks.

Shuffle order: one permutation per (seed, epoch), the same for every batch size and protocol, from a
private generator (never the global RNG), so a member's order depends on nothing but its seed, and a
resumed run can regenerate any epoch's order from the two numbers.

Why chunks: Lightning's per-step machinery costs ~0.4 ms, as much as a whole optimizer step of a small
MLP at batch size 1, so each Lightning "batch" carries a chunk of minibatches (about ``CHUNK_SAMPLES``
samples per member) and the system takes one optimizer step per minibatch, exactly as a hand-written
loop would (measured before: 256-sample chunks left 0.79× of a hand-written loop at batch 32,
2,048-sample chunks 0.95-0.97×).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from ae_batch.training.protocols import Budget

CHUNK_SAMPLES = 2048


def shuffle_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``n`` training samples for ``epoch`` (0-based) of training seed ``seed``."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=generator)


@dataclass
class Cursor:
    """Where training stands: the 0-based epoch in progress, optimizer steps done in it, and in total."""

    epoch: int = 0
    position: int = 0
    step: int = 0


class StackedBatches:
    """The rest of the current epoch as chunks of ``[K, B]`` index tensors (row k: member k's batch).

    Lightning iterates this once per epoch; it reads the shared ``cursor`` to know the epoch and where
    in it to start (a resumed run starts mid-epoch), and stops at the budget's last step.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        budget: Budget,
        cursor: Cursor,
        device: torch.device | str = "cpu",
        chunk_samples: int = CHUNK_SAMPLES,
    ) -> None:
        self.seeds, self.budget, self.cursor, self.device = list(seeds), budget, cursor, device
        self.steps_per_chunk = max(1, chunk_samples // budget.batch_size)

    def epoch_indices(self, epoch: int) -> list[torch.Tensor]:
        """Every minibatch of ``epoch`` as ``[K, B]`` (the last one may be smaller: ``n % B``)."""
        orders = torch.stack([shuffle_order(self.budget.n_train, s, epoch) for s in self.seeds])
        steps = self.budget.steps_in_epoch(epoch)
        return list(torch.split(orders.to(self.device), self.budget.batch_size, dim=1))[:steps]

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        batches = self.epoch_indices(self.cursor.epoch)[self.cursor.position :]
        for start in range(0, len(batches), self.steps_per_chunk):
            yield batches[start : start + self.steps_per_chunk]


class StackedData(pl.LightningDataModule):
    """Train/validation tensors, moved to the trainer's device once (in ``setup``), and the batches."""

    def __init__(
        self, train_x: torch.Tensor, val_x: torch.Tensor, seeds: Sequence[int], budget: Budget, cursor: Cursor
    ) -> None:
        super().__init__()
        self.train_x, self.val_x = train_x, val_x
        self.seeds, self.budget, self.cursor = list(seeds), budget, cursor

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.train_x, self.val_x = self.train_x.to(device), self.val_x.to(device)

    def train_dataloader(self) -> StackedBatches:
        return StackedBatches(self.seeds, self.budget, self.cursor, self.train_x.device)
