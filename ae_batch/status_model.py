"""What ``ae-batch status`` knows about a study's grid: groups, cells and the study (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GroupStatus:
    id: str
    cell: tuple[str, str, int]
    members: list[str]
    state: str  # done | trained (not evaluated) | training | interrupted | waiting
    epoch: int | None = None
    epochs: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    eta: float | None = None  # seconds left, from the group's own progress file
    work: float | None = None  # samples still to train (all members); None: unknown
    reason: str = ""
    diverged: list[str] = field(default_factory=list)


@dataclass
class CellStatus:
    cell: tuple[str, str, int]
    label: str
    groups: list[GroupStatus]
    note: str = ""

    def count(self, state: str) -> int:
        return sum(len(g.members) for g in self.groups if g.state == state)

    @property
    def total(self) -> int:
        return sum(len(g.members) for g in self.groups)


@dataclass
class StudyStatus:
    study: str
    results: Path
    cells: list[CellStatus]
    now: float
    eta: float | None = None
    basis: str = ""
    exists: bool = True

    @property
    def groups(self) -> list[GroupStatus]:
        return [g for c in self.cells for g in c.groups]

    def count(self, state: str, groups: bool = False) -> int:
        return sum(1 if groups else len(g.members) for g in self.groups if g.state == state)

    @property
    def complete(self) -> bool:
        return all(g.state == "done" for g in self.groups)
