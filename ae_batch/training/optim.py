"""One optimizer for a stacked model that is exactly K separate optimizers, one per member.

Adam and AdamW are elementwise: stepping a ``[K, ...]`` tensor is stepping its K member slices, each with
its own moments; only the hyperparameters must be the member's. So:

* when every member shares the learning rate and weight decay (a protocol's seeds at one batch size),
  one fused Adam over the stacked tensors does it in one kernel pass;
* when they differ (a tuned protocol's learning-rate grid), the optimizer gets one parameter group per
  member holding views of that member's slices, with the member's learning rate and weight decay;
  before each step the views' gradients are pointed at the fresh gradients' slices
  (:class:`StackedOptimizer` does this), and the fused kernel runs once per member group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw", "sgd")


def _torch_optimizer(groups: list[dict[str, Any]], name: str) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(groups, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, fused=True)
    if name == "sgd":
        return torch.optim.SGD(groups)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


class StackedOptimizer:
    """The torch optimizer (``.optimizer``, what Lightning is given) plus the per-member gradient views."""

    def __init__(
        self, params: Sequence[nn.Parameter], name: str, learning_rates: Sequence[float], weight_decay: float
    ) -> None:
        self.params = list(params)
        self.k = len(learning_rates)
        self.per_member = len(set(learning_rates)) > 1
        if not self.per_member:
            groups = [{"params": self.params, "lr": float(learning_rates[0]), "weight_decay": weight_decay}]
            self.views: list[list[nn.Parameter]] = []
        else:
            self.views = [[nn.Parameter(p.detach()[k]) for p in self.params] for k in range(self.k)]
            groups = [
                {"params": views, "lr": float(lr), "weight_decay": weight_decay}
                for views, lr in zip(self.views, learning_rates, strict=True)
            ]
        self.optimizer = _torch_optimizer(groups, name)

    def step(self) -> None:
        if self.per_member:
            for k, views in enumerate(self.views):
                for view, p in zip(views, self.params, strict=True):
                    view.grad = None if p.grad is None else p.grad[k]
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
