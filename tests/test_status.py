"""``ae-batch status``: a fake results folder (the JSON files jobs write), classified and rendered."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ae_batch.config import load_study_config, study_config
from ae_batch.errors import ConfigError
from ae_batch.grid import group_file, member_dir, members_of_cell, new_group_id
from ae_batch.status import collect, samples_per_member, show_status
from ae_batch.status_render import WIDTH, duration, render

CONFIG = """\
study: st
batch_sizes: [4, 16]
seeds: [0, 1]
training: {max_epochs: 3}
protocols:
  paper: {budget: epochs, lr: fixed}
  steps: {budget: steps, steps: 60, lr: sqrt}
datasets:
  icd: {kind: events, events: e.csv, subjects: s.csv, code_map: c.csv}
"""
N_TRAIN = 96
NOW = 1_000_000.0
HOST = socket.gethostname()
PAPER4, PAPER16, STEPS4, STEPS16 = (
    ("icd", "paper", 4),
    ("icd", "paper", 16),
    ("icd", "steps", 4),
    ("icd", "steps", 16),
)


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def grid(tmp_path):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    study = study_config(load_study_config([tmp_path / "cfg.yaml"]))
    results = tmp_path / "results" / "st"
    write(results / "icd" / "prepared" / "meta.json", {"input_contract": {"n_subjects": {"train": N_TRAIN}}})
    return study, results


def finish(study, results, cell, seconds=10.0, evaluated=True, diverged=()):
    """What the train (and evaluate) jobs leave: member train.json, the group manifest, its eval.json."""
    members = members_of_cell(study, *cell)
    gid = new_group_id(members)
    for m in members:
        record = {"fingerprint": m.fingerprint, "train_group_id": gid, "member": m.name, "samples_seen": 300}
        record |= {"train_seconds": seconds, "validation_seconds": 0.0, "diverged": m.name in diverged}
        write(member_dir(results, m) / "train.json", record)
    write(group_file(results, cell, gid, "train"), {"id": gid})
    if evaluated:
        write(group_file(results, cell, gid, "eval"), {"id": gid})
    return gid


def progress(study, results, cell, **fields):
    members = members_of_cell(study, *cell)
    gid = new_group_id(members)
    payload = {"group": gid, "members": [m.name for m in members], "status": "training", "epochs": 3}
    payload |= {
        "total_steps": 60,
        "host": HOST,
        "pid": os.getpid(),
        "started_at": NOW - 100,
        "updated_at": NOW - 10,
    }
    write(group_file(results, cell, gid, "progress"), payload | fields)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def by_cell(status):
    return {c.cell: c for c in status.cells}


@pytest.fixture
def mixed(grid):
    """paper bs4 done, paper bs16 trained (no eval), steps bs4 training, steps bs16 interrupted."""
    study, results = grid
    finish(study, results, PAPER4, seconds=10.0)
    gid = finish(study, results, PAPER16, seconds=2.0, evaluated=False)
    trained = {"status": "trained", "started_at": NOW - 500, "updated_at": NOW - 495}  # 5 s job, 2 s training
    write(group_file(results, PAPER16, gid, "progress"), trained)
    progress(study, results, STEPS4, epoch=2, step=40, train_loss=0.5, val_loss=[0.4, 0.6], eta_seconds=130.0)
    progress(study, results, STEPS16, epoch=2, step=12, pid=dead_pid())
    return study, results, collect(study, results, now=NOW)


def test_classification_per_member_and_cell(mixed):
    _, _, status = mixed
    cells = by_cell(status)
    assert [(cells[c].count("done"), cells[c].total) for c in (PAPER4, PAPER16)] == [(2, 2), (0, 2)]
    assert cells[PAPER16].count("trained") == 2
    assert cells[STEPS4].count("training") == 2
    assert cells[STEPS16].count("interrupted") == 2
    assert "process" in cells[STEPS16].groups[0].reason
    assert (status.count("done"), status.count("waiting"), status.complete) == (2, 0, False)


def test_rendered_lines(mixed):
    _, _, status = mixed
    lines = render(status)
    training = next(line for line in lines if "training:" in line)
    assert training.startswith("  bs4 ")
    assert "epoch 2/3, train 0.5, val 0.5, ETA 2m 00s" in training
    interrupted = next(line for line in lines if "interrupted at" in line)
    assert "interrupted at epoch 2/3 — rerun to resume" in interrupted
    assert "icd · steps (60 steps, sqrt lr)" in lines
    total = next(line for line in lines if line.startswith("Total:"))
    assert total.startswith("Total: 2/8 members done · 2 training · 2 interrupted · 2 trained, not evaluated")
    assert "4 groups (1 done, 1 trained, 1 training, 1 interrupted)" in "\n".join(lines)
    assert all(len(line) <= WIDTH for line in lines)
    assert "\x1b[" not in "\n".join(lines) and "\x1b[" in "\n".join(render(status, color=True))


def test_eta_arithmetic_on_planted_throughputs(mixed):
    study, _, status = mixed
    # the training group: its own ETA, 130 s written 10 s ago -> 120 s
    assert by_cell(status)[STEPS4].groups[0].eta == pytest.approx(120.0)
    # interrupted steps bs16 (step 12 of 60 done): 2 members x 960 samples x 0.8 left, at the
    # bs16 throughput finished groups measured (paper bs16: 600 samples / 2 s = 300 samples/s), plus
    # their job's overhead outside the training loop (5 s wall - 2 s)
    assert samples_per_member(study, STEPS16, N_TRAIN) == 10 * N_TRAIN
    waiting = 2 * 960 * 0.8 / 300.0 + 3.0
    assert status.eta == pytest.approx(max(120.0, 120.0 + waiting))
    assert status.basis == "running groups' ETAs + throughput of 2 finished groups, 1 at a time"
    assert render(status)[-1].startswith(f"Time left: ~{duration(120.0 + waiting)} (running")


def test_eta_falls_back_to_the_dataset_and_divides_by_parallel_groups(grid):
    study, results = grid
    finish(study, results, PAPER4, seconds=60.0)  # 600 samples / 60 s = 10 samples/s, icd's only measure
    progress(study, results, PAPER16, epoch=1, eta_seconds=50.0, updated_at=NOW)
    progress(study, results, STEPS4, epoch=0, updated_at=NOW)  # just started: no ETA of its own yet
    status = collect(study, results, now=NOW)
    work = 2 * samples_per_member(study, STEPS4, N_TRAIN) + 2 * samples_per_member(study, STEPS16, N_TRAIN)
    assert status.eta == pytest.approx((50.0 + work / 10.0) / 2)
    assert status.basis.endswith("2 at a time")


def test_eta_unknown_until_a_group_finishes_or_reports_its_pace(grid):
    study, results = grid
    progress(study, results, PAPER4, epoch=1, eta_seconds=50.0, updated_at=NOW)
    status = collect(study, results, now=NOW)
    assert status.eta is None and "no group of icd has finished" in status.basis
    assert "ETA unknown" in render(status)[-1]
    # once a running group reports its pace (step 20 of 60, 40 s left: 2 x 4 x 40 samples in 40 s)
    progress(study, results, PAPER4, epoch=1, step=20, eta_seconds=40.0, updated_at=NOW)
    status = collect(study, results, now=NOW)
    work = 2 * sum(samples_per_member(study, c, N_TRAIN) for c in (PAPER16, STEPS4, STEPS16))
    assert status.eta == pytest.approx(40.0 + work / 8.0)
    assert status.basis == "running groups' ETAs + throughput of 1 running group, 1 at a time"
    (results / "icd" / "prepared" / "meta.json").unlink()
    assert "not prepared" in collect(study, results, now=NOW).basis


def test_stale_fingerprint_counts_as_waiting(grid):
    study, results = grid
    finish(study, results, PAPER4)
    seed1 = member_dir(results, members_of_cell(study, *PAPER4)[1]) / "train.json"
    write(seed1, json.loads(seed1.read_text()) | {"fingerprint": "stale"})
    cell = by_cell(collect(study, results, now=NOW))[PAPER4]
    assert (cell.count("done"), cell.count("waiting")) == (1, 1)


def test_silent_group_is_interrupted_and_other_hosts_pids_are_not_checked(grid):
    study, results = grid
    progress(study, results, PAPER4, epoch=1, host="node7", pid=dead_pid(), updated_at=NOW - 60)
    progress(study, results, PAPER16, epoch=1, host="node7", updated_at=NOW - 3 * 3600)
    cells = by_cell(collect(study, results, now=NOW))
    assert cells[PAPER4].groups[0].state == "training"
    assert (
        cells[PAPER16].groups[0].state == "interrupted"
        and "no update for 3h" in cells[PAPER16].groups[0].reason
    )


def test_diverged_members_are_named(grid):
    study, results = grid
    finish(study, results, PAPER4, diverged=("seed1",))
    progress(study, results, STEPS4, epoch=1, train_loss=1.0, val_loss=[0.5, float("nan")], eta_seconds=9.0)
    lines = render(collect(study, results, now=NOW))
    assert sum("diverged: seed1" in line for line in lines) == 2


def test_watch_stops_on_ctrl_c_and_rejects_bad_seconds(grid, monkeypatch):
    study, results = grid
    monkeypatch.chdir(results.parent.parent)

    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    out = io.StringIO()
    show_status(["cfg.yaml"], watch=1.0, out=out)
    assert "0/8 members done" in out.getvalue()
    with pytest.raises(ConfigError, match="--watch"):
        show_status(["cfg.yaml"], watch=0.0, out=out)


def test_cli_on_a_finished_study(grid):
    study, results = grid
    for cell in (PAPER4, PAPER16, STEPS4, STEPS16):
        finish(study, results, cell)
    cmd = [sys.executable, "-m", "ae_batch", "status", "cfg.yaml"]
    run = subprocess.run(
        [*cmd, "--watch", "0.1"], cwd=results.parent.parent, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "Total: 8/8 members done" in run.stdout and "Time left: none" in run.stdout
    (results.parent.parent / "bad.yaml").write_text("batch_sizes: oops\n")
    bad = subprocess.run(
        [*cmd[:-1], "bad.yaml"], cwd=results.parent.parent, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "ae-batch status: error:" in bad.stderr
