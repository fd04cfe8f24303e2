"""The study's grid: members, cells, and which members train together (train groups).

A **member** is one grid point: dataset × protocol × batch size × seed (× learning rate for a tuned
protocol). A **cell** is dataset × protocol × batch size. Members of one cell train together as one
stacked model in one job: a **train group**. Which members form a group is decided when the workflow is
planned, from what is already on disk:

* a member is *done* when its ``train.json`` carries the member's current settings fingerprint and the
  manifest of the group that trained it exists: it keeps that group (nothing reruns);
* every other member of the cell goes into one new group (at most ``training.max_stack`` members each),
  whose id is a hash of its members and their fingerprints.

So adding a seed, a learning rate or a batch size trains only the new members, changing a training
setting retrains the members it touches (their fingerprint changes), and a group's id never depends on
absolute paths. The group's spec (``groups/<id>.spec.json``, written once, content-addressed) is all the
train job needs; the Snakefile passes its path instead of a settings blob.

No torch, no pandas: this runs at DAG-build time and in ``ae-batch status``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ae_batch.config import ProtocolConfig, StudyConfig
from ae_batch.io import read_json, write_json
from ae_batch.training.protocols import learning_rates

FORMAT = 1  # bump when the meaning of a trained member changes (forces retraining)
TRAIN_SETTINGS = ("optimizer", "weight_decay", "loss", "eval_batch_size")


def digest(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Member:
    dataset: str
    protocol: str
    batch_size: int
    seed: int
    learning_rate: float
    tuned: bool
    fingerprint: str

    @property
    def name(self) -> str:
        return f"seed{self.seed}-lr{self.learning_rate!r}" if self.tuned else f"seed{self.seed}"

    @property
    def cell(self) -> tuple[str, str, int]:
        return (self.dataset, self.protocol, self.batch_size)

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.protocol}/bs{self.batch_size}/{self.name}"


@dataclass(frozen=True)
class Group:
    id: str
    dataset: str
    protocol: str
    batch_size: int
    members: tuple[Member, ...]

    @property
    def cell(self) -> tuple[str, str, int]:
        return (self.dataset, self.protocol, self.batch_size)

    @property
    def seeds(self) -> list[int]:
        return sorted({m.seed for m in self.members})


def cell_dir(results: str | Path, dataset: str, protocol: str, batch_size: int) -> Path:
    return Path(results) / dataset / protocol / f"bs{batch_size}"


def member_dir(results: str | Path, member: Member) -> Path:
    return cell_dir(results, *member.cell) / member.name


def group_file(results: str | Path, cell: tuple[str, str, int], group_id: str, suffix: str) -> Path:
    """``<cell>/groups/<id>.<suffix>.json`` (suffix: spec, train, eval, progress) or ``.resume.pt``."""
    ext = "pt" if suffix == "resume" else "json"
    return cell_dir(results, *cell) / "groups" / f"{group_id}.{suffix}.{ext}"


def prepared_key(study: StudyConfig, dataset: str) -> str:
    """The dataset whose ``prepared/`` folder this dataset uses: datasets that read the same data with
    the same preprocessing (entries equal but for ``model``/``protocols``) are prepared once, under the
    alphabetically first one's name."""

    def data_part(name: str) -> str:
        entry = {k: v for k, v in study.datasets[name].items() if k not in ("model", "protocols")}
        return json.dumps(entry, sort_keys=True)

    mine = data_part(dataset)
    return min(name for name in study.datasets if data_part(name) == mine)


def members_of_cell(study: StudyConfig, dataset: str, protocol: str, batch_size: int) -> list[Member]:
    spec = study.protocol_for(dataset, protocol)
    model = asdict(study.model_for(dataset))
    training = {k: getattr(study.training, k) for k in TRAIN_SETTINGS}
    budget = {k: getattr(spec, k) for k in ("budget", "epochs", "steps", "validate_every_steps")}
    shared = {
        "format": FORMAT,
        "prepared": prepared_key(study, dataset),
        "model": model,
        "training": training,
        "budget": budget,
        "batch_size": batch_size,
    }
    out = []
    for seed in study.seeds:
        for lr in learning_rates(spec, study.training.learning_rate, batch_size):
            fingerprint = digest({**shared, "seed": seed, "learning_rate": lr}, 16)
            out.append(Member(dataset, protocol, batch_size, seed, lr, spec.lr == "tuned", fingerprint))
    return out


def cells(study: StudyConfig) -> list[tuple[str, str, int]]:
    return [(d, p, b) for d in sorted(study.datasets) for p in study.protocols for b in study.batch_sizes]


def new_group_id(members: Iterable[Member]) -> str:
    return "g" + digest(sorted((m.name, m.fingerprint) for m in members))


def trained_group(results: str | Path, member: Member) -> str | None:
    """The group that trained ``member`` with its current settings, or None if it needs training."""
    record_path = member_dir(results, member) / "train.json"
    try:
        record = read_json(record_path)
    except (OSError, ValueError):
        return None
    group_id = record.get("train_group_id")
    if record.get("fingerprint") != member.fingerprint or not group_id:
        return None
    return group_id if group_file(results, member.cell, group_id, "train").exists() else None


def plan_groups(study: StudyConfig, results: str | Path) -> list[Group]:
    """Every train group of the study: those that already trained current members, plus new ones."""
    groups: list[Group] = []
    for dataset, protocol, batch_size in cells(study):
        members = members_of_cell(study, dataset, protocol, batch_size)
        done: dict[str, list[Member]] = {}
        todo: list[Member] = []
        for m in members:
            gid = trained_group(results, m)
            (done.setdefault(gid, []) if gid else todo).append(m)
        for gid, ms in sorted(done.items()):
            groups.append(Group(gid, dataset, protocol, batch_size, tuple(ms)))
        size = study.training.max_stack or len(todo) or 1
        for start in range(0, len(todo), size):
            chunk = tuple(todo[start : start + size])
            groups.append(Group(new_group_id(chunk), dataset, protocol, batch_size, chunk))
    return groups


def group_spec(study: StudyConfig, results: str | Path, group: Group) -> dict[str, Any]:
    """Everything the train job needs, with paths relative to the working directory."""
    protocol: ProtocolConfig = study.protocol_for(group.dataset, group.protocol)
    prepared = Path(results) / prepared_key(study, group.dataset) / "prepared"
    return {
        "id": group.id,
        "dataset": group.dataset,
        "protocol": asdict(protocol),
        "batch_size": group.batch_size,
        "members": [
            {
                "name": m.name,
                "seed": m.seed,
                "learning_rate": m.learning_rate,
                "tuned": m.tuned,
                "fingerprint": m.fingerprint,
                "dir": str(member_dir(results, m)),
                "init": str(Path(results) / group.dataset / "init" / f"seed{m.seed}.pt"),
            }
            for m in group.members
        ],
        "model": asdict(study.model_for(group.dataset)),
        "training": {k: getattr(study.training, k) for k in TRAIN_SETTINGS},
        "prepared": str(prepared),
        "cell_dir": str(cell_dir(results, group.dataset, group.protocol, group.batch_size)),
    }


def write_group_spec(study: StudyConfig, results: str | Path, group: Group) -> Path:
    """Write the group's spec once (its id is a hash of its content: an existing file is current)."""
    path = group_file(results, group.cell, group.id, "spec")
    if not path.exists():
        write_json(path, group_spec(study, results, group))
    return path


def sibling_groups(groups: list[Group], group: Group) -> list[Group]:
    """Groups of the same cell holding other learning rates of this group's seeds (tuned protocols:
    the learning rate is selected per seed across them, by validation loss)."""
    seeds = set(group.seeds)
    return [
        g
        for g in groups
        if g.id != group.id
        and (g.dataset, g.protocol, g.batch_size) == (group.dataset, group.protocol, group.batch_size)
        and seeds & set(g.seeds)
        and any(m.tuned for m in g.members)
    ]
