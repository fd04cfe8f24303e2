"""The Lightning system for stacked training: steps, validation schedule, best-by-validation per member.

The model (a :class:`~ae_batch.models.stacked.StackedAutoencoder`) and the data are injected; the system
never sees a file. Optimisation is manual because each Lightning batch is a chunk of minibatches (see
``ae_batch.training.batches``): one optimizer step per minibatch. Validation runs inside the step loop at
exactly the steps the protocol's budget names (every epoch end; under a step budget also every
``validate_every_steps``), so a step budget's validation points do not depend on chunking.

Everything that must survive an interruption is in :class:`TrainState` (plain tensors and lists), which
``ae_batch.training.checkpoint`` saves after every epoch; the optimizer's own state is saved beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch

from ae_batch.errors import TrainingInterrupted
from ae_batch.models.stacked import StackedAutoencoder
from ae_batch.training.batches import Cursor, StackedData
from ae_batch.training.optim import StackedOptimizer
from ae_batch.training.protocols import Budget


@dataclass
class TrainState:
    """Everything a resumed run needs besides weights and optimizer moments."""

    cursor: Cursor = field(default_factory=Cursor)
    samples: int = 0
    train_seconds: float = 0.0
    validation_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    history: list[list[dict[str, float]]] = field(default_factory=list)
    best_val: list[float] = field(default_factory=list)
    best_epoch: list[int] = field(default_factory=list)
    best_step: list[int] = field(default_factory=list)
    loss_sum: list[float] = field(default_factory=list)  # train recon loss × samples since last validation
    loss_n: int = 0
    interval_samples: int = 0
    interval_seconds: float = 0.0

    @classmethod
    def fresh(cls, k: int) -> TrainState:
        return cls(
            history=[[] for _ in range(k)],
            best_val=[float("inf")] * k,
            best_epoch=[0] * k,
            best_step=[0] * k,
            loss_sum=[0.0] * k,
        )

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cursor"] = dict(self.cursor.__dict__)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**{**d, "cursor": Cursor(**d["cursor"])})


class StackedSystem(pl.LightningModule):
    def __init__(
        self,
        stack: StackedAutoencoder,
        learning_rates: Sequence[float],
        budget: Budget,
        loss: str = "mse",
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        eval_batch_size: int = 256,
        state: TrainState | None = None,
        best_params: list[torch.Tensor] | None = None,
        on_epoch_end: Callable[[StackedSystem], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.stack = stack
        self.learning_rates = list(learning_rates)
        self.budget, self.loss_kind = budget, loss
        self.optimizer_name, self.weight_decay = optimizer, weight_decay
        self.eval_batch_size = eval_batch_size
        self.state = state or TrainState.fresh(stack.k)
        # Best-by-validation weights of every member, as copies of the stacked parameters.
        self.best_params = best_params or [p.detach().clone() for p in stack.stacked_parameters()]
        self.on_epoch_end_cb = on_epoch_end
        self.should_stop = should_stop
        self.optimizer_state: dict[str, Any] | None = None  # loaded into the optimizer at fit start
        self._epoch_started = 0.0
        self._pause = 0.0  # validation + checkpoint seconds inside the current epoch's timing window

    # --- Lightning plumbing ---------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: ARG002 - the stack's grads are views
        self.stack.zero_grad()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self.stacked_optimizer = StackedOptimizer(
            self.stack.stacked_parameters(), self.optimizer_name, self.learning_rates, self.weight_decay
        )
        if self.optimizer_state is not None:
            self.stacked_optimizer.load_state_dict(self.optimizer_state)
        return self.stacked_optimizer.optimizer

    def setup(self, stage: str) -> None:
        self.best_params = [b.to(self.device) for b in self.best_params]

    @property
    def data(self) -> StackedData:
        return self.trainer.datamodule

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        self._pause = 0.0

    def training_step(self, chunk: list[torch.Tensor], batch_idx: int) -> None:
        opt = self.stacked_optimizer
        st, cursor, k = self.state, self.state.cursor, self.stack.k
        for idx in chunk:
            inputs = self.stack.stack_inputs(self.data.train_x, idx)
            self.stack.zero_grad()
            recon, aux = self.stack.member_losses(inputs, self.loss_kind)
            (recon.sum() + aux.sum()).backward()
            opt.step()
            n = idx.shape[1]
            for j, v in enumerate((recon.detach() * n).tolist()):
                st.loss_sum[j] += v
            st.loss_n += n
            st.samples += n
            st.interval_samples += n * k
            cursor.position += 1
            cursor.step += 1
            if self.budget.validates_after(cursor.step):
                self.validate()
            if self.should_stop():
                raise TrainingInterrupted(f"stopped at epoch {cursor.epoch + 1}, step {cursor.step}")

    def on_train_epoch_end(self) -> None:
        st = self.state
        st.train_seconds += time.perf_counter() - self._epoch_started - self._pause
        st.cursor.epoch += 1
        st.cursor.position = 0
        if self.on_epoch_end_cb is not None:
            self.on_epoch_end_cb(self)  # checkpoint and progress, outside the timed window

    def elapsed_train_seconds(self) -> float:
        """Training seconds so far, including the current (unfinished) epoch."""
        if not self._epoch_started:
            return self.state.train_seconds
        return self.state.train_seconds + time.perf_counter() - self._epoch_started - self._pause

    # --- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def member_val_losses(self) -> torch.Tensor:
        """Mean per-sample validation reconstruction loss of every member ``[K]``."""
        total = torch.zeros(self.stack.k, device=self.device, dtype=torch.float64)
        for xv in torch.split(self.data.val_x, self.eval_batch_size):
            inputs = self.stack.repeat_inputs(xv)
            total += self.stack.member_sample_losses(inputs, self.loss_kind).double().sum(dim=1)
        return total / len(self.data.val_x)

    def validate(self) -> None:
        started = time.perf_counter()
        st, cursor = self.state, self.state.cursor
        val = self.member_val_losses().tolist()
        interval = self.elapsed_train_seconds() - st.interval_seconds
        for j, v in enumerate(val):
            row = {
                "epoch": cursor.epoch + 1,
                "step": cursor.step,
                "samples": st.samples,
                "train_loss": st.loss_sum[j] / max(st.loss_n, 1),
                "val_loss": v,
                "seconds": self.elapsed_train_seconds(),
                "val_seconds": st.validation_seconds,
                "samples_per_second": st.interval_samples / interval if interval > 0 else float("nan"),
            }
            st.history[j].append(row)
            if v < st.best_val[j]:  # NaN never improves: a diverged member keeps its last finite best
                st.best_val[j], st.best_epoch[j], st.best_step[j] = v, cursor.epoch + 1, cursor.step
                for best, p in zip(self.best_params, self.stack.stacked_parameters(), strict=True):
                    best[j].copy_(p.detach()[j])
        st.loss_sum = [0.0] * self.stack.k
        st.loss_n = 0
        st.interval_samples = 0
        st.interval_seconds = self.elapsed_train_seconds()
        spent = time.perf_counter() - started
        st.validation_seconds += spent
        self._pause += spent
        for j in range(self.stack.k):
            st.history[j][-1]["val_seconds"] = st.validation_seconds
