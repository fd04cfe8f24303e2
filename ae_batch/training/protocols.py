"""A protocol's rules, applied to one batch size: the learning rate(s) and the step budget.

* ``lr``: ``fixed`` is the config's learning rate at every batch size; ``linear`` scales it by B/B_ref
  (Goyal et al. 2017); ``sqrt`` by √(B/B_ref) (Malladi et al. 2022, the rule derived for Adam);
  ``tuned`` trains every value of ``lr_grid`` and the best by validation loss is selected later.
* ``budget``: ``epochs`` trains E epochs (E·⌈N/B⌉ optimizer steps, so small batches take more steps);
  ``steps`` trains the same number of optimizer steps S at every batch size (large batches see more
  epochs; the last epoch may be partial). The (seed, epoch) shuffle order is the same either way.
* Validation: at every epoch end, and under a step budget also every ``validate_every_steps`` steps
  (default ⌈S/20⌉), and at the last step; the best-by-validation checkpoint is chosen among these.

No torch here: the workflow plans the grid with these rules at DAG-build time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ae_batch.config import ProtocolConfig

DEFAULT_VALIDATIONS_PER_STEP_BUDGET = 20


def learning_rates(protocol: ProtocolConfig, base_lr: float, batch_size: int) -> list[float]:
    """The learning rate of each member at this batch size (one, or the grid for ``tuned``)."""
    ratio = batch_size / protocol.reference_batch_size
    if protocol.lr == "fixed":
        return [float(base_lr)]
    if protocol.lr == "linear":
        return [float(base_lr * ratio)]
    if protocol.lr == "sqrt":
        return [float(base_lr * math.sqrt(ratio))]
    if protocol.lr == "tuned":
        return [float(v) for v in protocol.lr_grid]
    raise ValueError(f"protocol {protocol.name!r}: unknown lr rule {protocol.lr!r}")


@dataclass(frozen=True)
class Budget:
    """How long one batch size trains under a protocol, in optimizer steps, and when it validates."""

    batch_size: int
    n_train: int
    total_steps: int
    validate_every_steps: int | None

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_train // self.batch_size)

    @property
    def epochs(self) -> int:
        """Epochs started (the last may be partial under a step budget)."""
        return -(-self.total_steps // self.steps_per_epoch)

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps of 0-based ``epoch`` (``steps_per_epoch`` except a partial last one)."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

    def validates_after(self, step: int) -> bool:
        """Whether validation runs after global optimizer step ``step`` (1-based)."""
        if step == self.total_steps or step % self.steps_per_epoch == 0:
            return True
        return bool(self.validate_every_steps) and step % self.validate_every_steps == 0

    def validation_points(self) -> list[int]:
        return [s for s in range(1, self.total_steps + 1) if self.validates_after(s)]


def budget_for(protocol: ProtocolConfig, batch_size: int, n_train: int) -> Budget:
    if batch_size > n_train:
        raise ValueError(f"batch size {batch_size} exceeds the {n_train} training subjects")
    steps_per_epoch = -(-n_train // batch_size)
    if protocol.budget == "epochs":
        total = int(protocol.epochs or 1) * steps_per_epoch
        every = protocol.validate_every_steps
    elif protocol.budget == "steps":
        total = int(protocol.steps or 1)
        every = protocol.validate_every_steps or max(1, -(-total // DEFAULT_VALIDATIONS_PER_STEP_BUDGET))
    else:
        raise ValueError(f"protocol {protocol.name!r}: unknown budget {protocol.budget!r}")
    return Budget(batch_size, n_train, total, every)


def protocol_label(name: str, spec: dict, max_epochs: int) -> str:
    """A protocol as a reader names it, e.g. ``paper (30 epochs, fixed lr)``."""
    if spec.get("budget") == "steps":
        budget = f"{spec.get('steps')} steps"
    else:
        budget = f"{spec.get('epochs') or max_epochs} epochs"
    return f"{name} ({budget}, {spec.get('lr', 'fixed')} lr)"
