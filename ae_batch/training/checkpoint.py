"""Resumable training: a checkpoint after every epoch, and a clean stop on SIGTERM/SIGINT.

The checkpoint (``groups/<id>.resume.pt``, one file per train group, replaced atomically) holds every
member's weights (the stack's flat buffer), the optimizer's state (moments and step counts), the
best-so-far weights and losses, the histories and accumulators, the position (epoch, step within it,
global step) and the RNG states. Together with the (seed, epoch) shuffle order, which is regenerated
rather than stored, that is everything: a resumed run is bitwise identical to an uninterrupted one on
CPU. The file is removed once the group's outputs are written, so checkpoints never accumulate.

On SIGTERM (what SLURM sends at the time limit or on preemption) or SIGINT (Ctrl-C) the run stops after
the optimizer step in progress, saves a checkpoint at that exact position and exits; a rerun resumes
there. A SIGKILL cannot be caught: the run resumes from the last completed epoch.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ae_batch.io import atomic_path

FORMAT = 1


class StopRequest:
    """A flag raised by SIGTERM or SIGINT; the training loop polls it after every optimizer step."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler signature
        self.signum = signum

    def install(self) -> StopRequest:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __call__(self) -> bool:
        return self.signum is not None


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, group_id: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors moved to CPU by the caller) atomically, tagged with the group."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, "group": group_id, "rng": rng_states(), **payload}, fh)


def load_checkpoint(path: str | Path, group_id: str) -> dict[str, Any] | None:
    """The checkpoint of this group, or None (no file, another group's, or an older format)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged checkpoint means: start over, never crash
        return None
    if payload.get("format") != FORMAT or payload.get("group") != group_id:
        return None
    return payload
