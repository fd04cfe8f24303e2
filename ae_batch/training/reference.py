"""The reference: one member trained alone by a minimal hand-written PyTorch loop.

Same protocol semantics as the stacked path (the member's (seed, epoch) shuffle order, the budget's
steps and validation points, best-by-validation weights), written as plainly as possible: randperm,
slice, zero_grad, forward, backward, step. The equivalence tests hold the stacked trainer to it, and
``benchmarks/train_throughput.py`` times it (with torch's default Adam and with the fused kernel) as the
baseline that stacking must beat.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ae_batch.models.losses import batch_loss, per_sample_loss
from ae_batch.training.batches import shuffle_order
from ae_batch.training.protocols import Budget


@dataclass
class AloneResult:
    state_dict: dict[str, torch.Tensor]
    best_val: float
    best_epoch: int
    best_step: int
    val_losses: list[float] = field(default_factory=list)
    steps: int = 0


def make_plain_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, fused: bool = True
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


@torch.no_grad()
def val_loss(model: nn.Module, x: torch.Tensor, loss: str, batch_size: int) -> float:
    total = 0.0
    for xb in torch.split(x, batch_size):
        total += float(per_sample_loss(model(xb).recon, xb, loss).double().sum())
    return total / len(x)


def train_alone(
    model: nn.Module,
    train_x: torch.Tensor,
    val_x: torch.Tensor,
    seed: int,
    budget: Budget,
    learning_rate: float,
    *,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    loss: str = "mse",
    eval_batch_size: int = 256,
    fused: bool = True,
    validate: bool = True,
) -> AloneResult:
    opt = make_plain_optimizer(model, optimizer, learning_rate, weight_decay, fused)
    best = AloneResult(copy.deepcopy(model.state_dict()), math.inf, 0, 0)
    step = 0
    for epoch in range(budget.epochs):
        order = shuffle_order(len(train_x), seed, epoch).to(train_x.device)
        for idx in list(torch.split(order, budget.batch_size))[: budget.steps_in_epoch(epoch)]:
            xb = train_x[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            (batch_loss(out.recon, xb, loss) + out.aux_loss).backward()
            opt.step()
            step += 1
            if validate and budget.validates_after(step):
                v = val_loss(model, val_x, loss, eval_batch_size)
                best.val_losses.append(v)
                if v < best.best_val:
                    best.best_val, best.best_epoch, best.best_step = v, epoch + 1, step
                    best.state_dict = copy.deepcopy(model.state_dict())
    best.steps = step
    return best
