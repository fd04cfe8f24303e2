"""The grid: protocols' learning-rate and budget rules, members and their fingerprints, and which
members train together (groups planned from what is on disk)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from ae_batch.config import ProtocolConfig, resolve_config, study_config
from ae_batch.grid import (
    group_file,
    members_of_cell,
    plan_groups,
    prepared_key,
    sibling_groups,
    write_group_spec,
)
from ae_batch.io import read_json, write_json
from ae_batch.training.protocols import budget_for, learning_rates, protocol_label

RAW: dict[str, Any] = {
    "batch_sizes": [1, 16],
    "seeds": [0, 1],
    "protocols": {
        "paper": {"budget": "epochs", "lr": "fixed"},
        "tuned": {"budget": "steps", "steps": 100, "lr": "tuned", "lr_grid": [1e-3, 1e-2]},
    },
    "datasets": {
        "ehr": {"kind": "tabular", "path": "t.csv"},
        "mri": {"kind": "mri", "path": "brains"},
        "mri_vq": {"kind": "mri", "path": "brains", "model": {"kind": "vqvae"}},
    },
}


def _study(**changes: Any) -> Any:
    raw = copy.deepcopy(RAW)
    raw.update(changes)
    return study_config(resolve_config(raw, "/base"))


# --- protocols --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "batch_size", "expected"),
    [
        ("fixed", 128, [1e-3]),
        ("linear", 64, [2e-3]),
        ("linear", 8, [2.5e-4]),
        ("sqrt", 128, [2e-3]),
        ("sqrt", 2, [2.5e-4]),
    ],
)
def test_learning_rate_rules(rule: str, batch_size: int, expected: list[float]) -> None:
    protocol = ProtocolConfig("p", "epochs", epochs=1, lr=rule, reference_batch_size=32)
    assert learning_rates(protocol, 1e-3, batch_size) == pytest.approx(expected)


def test_tuned_trains_the_whole_grid() -> None:
    protocol = ProtocolConfig("t", "steps", steps=10, lr="tuned", lr_grid=(3e-4, 1e-3))
    assert learning_rates(protocol, 1.0, 64) == [3e-4, 1e-3]


def test_epoch_budget_takes_more_steps_at_small_batches_and_a_step_budget_does_not() -> None:
    epochs = ProtocolConfig("paper", "epochs", epochs=30)
    steps = ProtocolConfig("equal", "steps", steps=3000)
    n = 1200
    assert budget_for(epochs, 1, n).total_steps == 36000 and budget_for(epochs, 100, n).total_steps == 360
    assert {budget_for(steps, b, n).total_steps for b in (1, 4, 100)} == {3000}
    big = budget_for(steps, 100, n)
    assert (big.steps_per_epoch, big.epochs, big.steps_in_epoch(249)) == (12, 250, 12)
    odd = budget_for(ProtocolConfig("e", "steps", steps=30), 64, n)  # 19 steps per epoch
    assert (odd.epochs, odd.steps_in_epoch(0), odd.steps_in_epoch(1)) == (2, 19, 11)  # the last is partial


def test_validation_schedule() -> None:
    steps = budget_for(ProtocolConfig("e", "steps", steps=100), 16, 80)  # 5 steps/epoch, default every 5
    assert steps.validate_every_steps == math.ceil(100 / 20)
    assert steps.validation_points() == list(range(5, 101, 5))
    custom = budget_for(ProtocolConfig("e", "steps", steps=20, validate_every_steps=7), 8, 64)  # 8/epoch
    assert custom.validation_points() == [7, 8, 14, 16, 20]  # every 7 steps, every epoch end, the last
    epochs = budget_for(ProtocolConfig("p", "epochs", epochs=3), 10, 95)  # epoch ends only
    assert epochs.validation_points() == [10, 20, 30]


def test_batch_larger_than_the_training_split_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        budget_for(ProtocolConfig("p", "epochs", epochs=1), 101, 100)


def test_protocol_label() -> None:
    assert protocol_label("paper", {"budget": "epochs", "lr": "fixed"}, 30) == "paper (30 epochs, fixed lr)"
    assert (
        protocol_label("eq", {"budget": "steps", "steps": 2000, "lr": "sqrt"}, 30)
        == "eq (2000 steps, sqrt lr)"
    )


# --- members ----------------------------------------------------------------------------------------
def test_members_of_a_tuned_cell_are_seed_times_learning_rate() -> None:
    study = _study()
    members = members_of_cell(study, "ehr", "tuned", 16)
    assert [m.name for m in members] == ["seed0-lr0.001", "seed0-lr0.01", "seed1-lr0.001", "seed1-lr0.01"]
    assert [m.name for m in members_of_cell(study, "ehr", "paper", 16)] == ["seed0", "seed1"]
    assert len({m.fingerprint for m in members}) == 4


def test_fingerprints_change_exactly_with_what_changes_training() -> None:
    base = {m.name: m.fingerprint for m in members_of_cell(_study(), "ehr", "paper", 16)}

    def fp(**changes: Any) -> dict[str, str]:
        return {m.name: m.fingerprint for m in members_of_cell(_study(**changes), "ehr", "paper", 16)}

    assert fp(downstream={"folds": 3}) == base  # evaluation settings
    assert fp(mlflow={"tracking_uri": "http://x:5000"}) == base  # tracking
    assert fp(seeds=[0, 1, 2]) | base == fp(seeds=[0, 1, 2])  # adding a seed keeps the others
    assert fp(batch_sizes=[1, 16, 64]) == base
    assert fp(training={"threads": 4, "accelerator": "cpu"}) == base  # runtime, not results
    for changed in (
        fp(training={"learning_rate": 0.01}),
        fp(training={"max_epochs": 3}),
        fp(model={"latent_dim": 8}),
    ):
        assert all(changed[k] != base[k] for k in base)


def test_datasets_on_the_same_data_share_one_prepared_folder() -> None:
    study = _study()
    assert prepared_key(study, "mri_vq") == prepared_key(study, "mri") == "mri"
    assert prepared_key(study, "ehr") == "ehr"


# --- groups -----------------------------------------------------------------------------------------
def _finish(results: Path, group: Any) -> None:
    """What a finished train job leaves: member train.json files and the group's manifest."""
    for m in group.members:
        write_json(results / m.dataset / m.protocol / f"bs{m.batch_size}" / m.name / "train.json",
                   {"fingerprint": m.fingerprint, "train_group_id": group.id})  # fmt: skip
    write_json(group_file(results, group.cell, group.id, "train"), {"id": group.id})


def test_new_members_form_one_group_per_cell_and_done_members_keep_theirs(tmp_path: Path) -> None:
    study = _study()
    first = plan_groups(study, tmp_path)
    assert len(first) == 3 * 2 * 2  # datasets × protocols × batch sizes
    assert all(len(g.members) == (4 if g.protocol == "tuned" else 2) for g in first)
    for g in first:
        _finish(tmp_path, g)
    again = plan_groups(study, tmp_path)
    assert {(g.cell, g.id) for g in again} == {(g.cell, g.id) for g in first}  # nothing to train

    added = _study(seeds=[0, 1, 2])
    plan = plan_groups(added, tmp_path)
    new = [g for g in plan if (g.cell, g.id) not in {(h.cell, h.id) for h in first}]
    assert len(new) == 12 and all({m.seed for m in g.members} == {2} for g in new)  # only the new seed

    bigger = plan_groups(_study(batch_sizes=[1, 16, 32]), tmp_path)
    new = [g for g in bigger if (g.cell, g.id) not in {(h.cell, h.id) for h in first}]
    assert {g.batch_size for g in new} == {32}

    retrain = plan_groups(_study(training={"learning_rate": 0.01}), tmp_path)
    changed = [g for g in retrain if g.protocol == "paper"]
    assert all((g.cell, g.id) not in {(h.cell, h.id) for h in first} for g in changed)
    tuned = [g for g in retrain if g.protocol == "tuned"]  # a tuned grid does not use training.learning_rate
    assert all((g.cell, g.id) in {(h.cell, h.id) for h in first} for g in tuned)


def test_a_group_without_its_manifest_is_planned_again_with_the_same_id(tmp_path: Path) -> None:
    study = _study()
    group = plan_groups(study, tmp_path)[0]
    _finish(tmp_path, group)
    group_file(tmp_path, group.cell, group.id, "train").unlink()  # killed before the manifest was written
    assert plan_groups(study, tmp_path)[0].id == group.id  # same id: its checkpoint is picked up


def test_max_stack_limits_members_per_group(tmp_path: Path) -> None:
    plan = plan_groups(_study(training={"max_stack": 1}), tmp_path)
    assert all(len(g.members) == 1 for g in plan) and len(plan) == 3 * 2 * (2 + 4)


def test_tuned_siblings_and_specs(tmp_path: Path) -> None:
    study = _study()
    first = plan_groups(study, tmp_path)
    for g in first:
        _finish(tmp_path, g)
    grown = copy.deepcopy(RAW["protocols"])
    grown["tuned"]["lr_grid"] = [1e-3, 1e-2, 1e-1]
    plan = plan_groups(_study(protocols=grown), tmp_path)
    new = [
        g
        for g in plan
        if g.protocol == "tuned" and g.dataset == "ehr" and g.batch_size == 16 and len(g.members) == 2
    ]
    assert len(new) == 1 and {m.learning_rate for m in new[0].members} == {1e-1}
    old = next(
        g
        for g in plan
        if g.protocol == "tuned" and g.dataset == "ehr" and g.batch_size == 16 and len(g.members) == 4
    )
    assert sibling_groups(plan, old) == new  # the old group's selection now also weighs the new rates
    path = write_group_spec(study, tmp_path, old)
    spec = read_json(path)
    assert spec["id"] == old.id and spec["protocol"]["lr_grid"] == [1e-3, 1e-2]
    assert spec["prepared"] == str(tmp_path / "ehr" / "prepared")
    assert [m["init"] for m in spec["members"]][0] == str(tmp_path / "ehr" / "init" / "seed0.pt")
