"""Train the members of one group as one stacked model: build, resume, fit, and hand back the results.

``fit_group`` is the plain, typed function behind the ``train`` stage (which reads files and writes the
outputs) and the equivalence tests (which call it on tensors).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ae_batch.errors import TrainingInterrupted
from ae_batch.training.checkpoint import StopRequest, load_checkpoint, save_checkpoint, set_rng_states
from ae_batch.training.protocols import Budget


@dataclass
class MemberResult:
    """One member's outcome: its best-by-validation weights (plain state dict) and its history."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_val: float
    best_epoch: int
    best_step: int

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.best_val)


@dataclass
class GroupResult:
    members: list[MemberResult]
    steps: int
    epochs: int
    samples: int
    train_seconds: float
    validation_seconds: float
    checkpoint_seconds: float
    resumed_from: dict[str, int] | None


def fit_group(
    template: nn.Module,
    init_states: Sequence[dict[str, torch.Tensor]],
    train_x: torch.Tensor,
    val_x: torch.Tensor,
    seeds: Sequence[int],
    learning_rates: Sequence[float],
    budget: Budget,
    *,
    loss: str = "mse",
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    eval_batch_size: int = 256,
    accelerator: str = "cpu",
    checkpoint_path: str | Path | None = None,
    group_id: str = "group",
    on_epoch: Callable[[Any], None] | None = None,
    stop: StopRequest | None = None,
) -> GroupResult:
    """Train ``len(seeds)`` members (member k: ``init_states[k]``, shuffle seed ``seeds[k]``, learning rate
    ``learning_rates[k]``) for ``budget`` as one stacked model.

    With ``checkpoint_path`` the run resumes from a checkpoint of the same group there, saves one after
    every epoch, and on SIGTERM/SIGINT saves one at the current step and raises ``TrainingInterrupted``.
    ``on_epoch(system)`` runs after every epoch (progress reporting). ``stop``: an installed
    :class:`StopRequest` the caller keeps for the whole job (a signal after training then lets the job
    finish writing its outputs); by default one is installed for the fit only.
    """
    from ae_batch.models.stacked import stack_members
    from ae_batch.training.batches import StackedData
    from ae_batch.training.system import StackedSystem, TrainState
    from ae_batch.training.trainer import build_trainer

    stack = stack_members(template, init_states)
    payload = load_checkpoint(checkpoint_path, group_id) if checkpoint_path else None
    state, best_params, resumed = None, None, None
    if payload is not None:
        stack.load_state_dict(payload["model"])
        state = TrainState.from_dict(payload["state"])
        best_params = [t.clone() for t in payload["best_params"]]
        set_rng_states(payload["rng"])
        resumed = {"epoch": state.cursor.epoch, "position": state.cursor.position, "step": state.cursor.step}
    own_stop = stop is None
    stop = stop or StopRequest()

    def epoch_end(system: StackedSystem) -> None:
        if checkpoint_path:
            _save(checkpoint_path, group_id, system, announce=False)
        if on_epoch is not None:
            on_epoch(system)

    system = StackedSystem(
        stack,
        learning_rates,
        budget,
        loss=loss,
        optimizer=optimizer,
        weight_decay=weight_decay,
        eval_batch_size=eval_batch_size,
        state=state,
        best_params=best_params,
        on_epoch_end=epoch_end,
        should_stop=stop,
    )
    if payload is not None:
        system.optimizer_state = payload["optimizer"]
    if payload is not None and on_epoch is not None:
        on_epoch(system)  # report the resumed position at once
    data = StackedData(train_x, val_x, seeds, budget, system.state.cursor)
    remaining = budget.epochs - system.state.cursor.epoch
    if remaining > 0:
        trainer = build_trainer(remaining, accelerator)
        if own_stop:
            stop.install()
        try:
            trainer.fit(system, datamodule=data)
        except (TrainingInterrupted, SystemExit, KeyboardInterrupt) as exc:
            # Our own stop (after a complete step), or Lightning's SIGTERM exit at a chunk boundary:
            # either way every completed step is in the state, so save exactly here.
            if checkpoint_path:
                _save(checkpoint_path, group_id, system)
            cursor = system.state.cursor
            raise TrainingInterrupted(
                f"interrupted ({_signal_name(stop.signum)}) at epoch {cursor.epoch + 1}, step {cursor.step} "
                f"of {budget.total_steps}; a checkpoint was saved: rerun to resume"
            ) from exc
        finally:
            if own_stop:
                stop.restore()
    st = system.state
    members = [
        MemberResult(
            state_dict=stack.member_state_dict(j, system.best_params),
            history=st.history[j],
            best_val=st.best_val[j],
            best_epoch=st.best_epoch[j],
            best_step=st.best_step[j],
        )
        for j in range(stack.k)
    ]
    return GroupResult(
        members=members,
        steps=st.cursor.step,
        epochs=budget.epochs,
        samples=st.samples,
        train_seconds=st.train_seconds,
        validation_seconds=st.validation_seconds,
        checkpoint_seconds=st.checkpoint_seconds,
        resumed_from=resumed,
    )


def _signal_name(signum: int | None) -> str:
    import signal

    return signal.Signals(signum).name if signum else "signal"


def _save(path: str | Path, group_id: str, system: Any, announce: bool = True) -> None:
    started = time.perf_counter()
    save_checkpoint(
        path,
        group_id,
        {
            "model": _to_cpu(system.stack.state_dict()),
            "best_params": [b.detach().cpu() for b in system.best_params],
            "optimizer": _to_cpu(system.stacked_optimizer.state_dict()),
            "state": system.state.as_dict(),
        },
    )
    system.state.checkpoint_seconds += time.perf_counter() - started
    if announce:
        print(f"checkpoint saved: {path} (step {system.state.cursor.step})", file=sys.stderr, flush=True)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
