"""Resume mid-run: a stopped or killed train job continues from its checkpoint, bitwise identical on CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from train_helpers import make_spec

from ae_batch.config import ProtocolConfig
from ae_batch.errors import TrainingInterrupted
from ae_batch.io import read_json
from ae_batch.stages.train import train_group
from ae_batch.training import checkpoint, loop

PROTOCOL = ProtocolConfig("paper", "epochs", epochs=4)
MEMBERS = [(0, 1e-3), (1, 3e-3)]
LOSSES = ["epoch", "step", "samples", "train_loss", "val_loss"]


@pytest.fixture(scope="module", autouse=True)
def _keep_torch_threads() -> Any:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _dirs(spec: Path) -> list[Path]:
    return [Path(m["dir"]) for m in read_json(spec)["members"]]


def _same_results(a: Path, b: Path) -> None:
    for da, db in zip(_dirs(a), _dirs(b), strict=True):
        assert (da / "model.pt").read_bytes() == (db / "model.pt").read_bytes()
        ha, hb = pd.read_csv(da / "history.csv"), pd.read_csv(db / "history.csv")
        pd.testing.assert_frame_equal(ha[LOSSES], hb[LOSSES], check_exact=True)
        ra, rb = read_json(da / "train.json"), read_json(db / "train.json")
        for key in ("best_epoch", "best_step", "val_recon_loss", "steps", "samples_seen"):
            assert ra[key] == rb[key], key


@pytest.fixture(scope="module")
def reference(tiny_prepared: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = make_spec(tmp_path_factory.mktemp("ref"), tiny_prepared["events"], 4, MEMBERS, PROTOCOL)
    train_group(spec, accelerator="cpu")
    return spec


class _StopAfter(loop.StopRequest):
    """A StopRequest raised after ``n`` polls (one poll per optimizer step), as SIGTERM would be."""

    n = 0

    def __call__(self) -> bool:
        type(self).n -= 1
        if type(self).n <= 0:
            self.signum = signal.SIGTERM
        return self.signum is not None


@pytest.mark.parametrize("stop_at", [7, 18, 40])  # mid-epoch, an epoch end (18 steps/epoch), mid-epoch 3
def test_stop_then_resume_is_bitwise_identical(
    tiny_prepared: Any, tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int
) -> None:
    spec = make_spec(tmp_path, tiny_prepared["events"], 4, MEMBERS, PROTOCOL)
    _StopAfter.n = stop_at
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "StopRequest", _StopAfter)  # the train stage installs one for the whole job
        with pytest.raises(TrainingInterrupted, match=f"step {stop_at} of 72"):
            train_group(spec, accelerator="cpu")
    groups = spec.parent
    assert (groups / "g0123456789.resume.pt").exists()
    assert read_json(groups / "g0123456789.progress.json")["status"] == "interrupted"
    assert not (groups / "g0123456789.train.json").exists()
    manifest = train_group(spec, accelerator="cpu")  # the rerun resumes
    assert manifest["resumed_from"]["step"] == stop_at
    assert not (groups / "g0123456789.resume.pt").exists()  # removed once the outputs are written
    _same_results(spec, reference)


def test_a_kill_loses_at_most_the_epoch_in_progress(
    tiny_prepared: Any, tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL cannot be caught: keep the checkpoint written at the end of epoch 2, as a kill during
    epoch 3 would leave it, and resume from it."""
    spec = make_spec(tmp_path, tiny_prepared["events"], 4, MEMBERS, PROTOCOL)
    checkpoint = spec.parent / "g0123456789.resume.pt"
    kept = tmp_path / "epoch2.pt"
    original = loop._save

    def save_and_keep(path: Any, group_id: str, system: Any, announce: bool = True) -> None:
        original(path, group_id, system, announce)
        if system.state.cursor.epoch == 2 and not kept.exists():
            shutil.copy(path, kept)

    monkeypatch.setattr(loop, "_save", save_and_keep)
    train_group(spec, accelerator="cpu")
    shutil.copy(kept, checkpoint)  # back to the state a kill during epoch 3 leaves
    for d in _dirs(spec):
        shutil.rmtree(d)
    (spec.parent / "g0123456789.train.json").unlink()
    manifest = train_group(spec, accelerator="cpu")
    assert manifest["resumed_from"] == {"epoch": 2, "position": 0, "step": 36}
    _same_results(spec, reference)


def test_checkpoint_of_another_group_is_ignored(tiny_prepared: Any, tmp_path: Path, reference: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared["events"], 4, MEMBERS, PROTOCOL)
    (spec.parent / "g0123456789.resume.pt").write_bytes(b"not a checkpoint")  # damaged: start over
    manifest = train_group(spec, accelerator="cpu")
    assert manifest["resumed_from"] is None
    _same_results(spec, reference)


def test_sigterm_saves_and_exits_then_a_rerun_completes(tiny_prepared: Any, tmp_path: Path) -> None:
    """The real signal, in a real process, as SLURM sends it at the time limit."""
    protocol = ProtocolConfig("paper", "epochs", epochs=60)
    spec = make_spec(tmp_path, tiny_prepared["events"], 1, [(0, 1e-3)], protocol)
    log = tmp_path / "train.log"
    cmd = [
        sys.executable,
        "-m",
        "ae_batch",
        "train",
        "--spec",
        str(spec),
        "--accelerator",
        "cpu",
        "--log",
        str(log),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while "epoch 2/" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not reach epoch 2"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "rerun to resume" in err  # on the terminal, not only the log
    assert (spec.parent / "g0123456789.resume.pt").exists()
    done = subprocess.run(
        cmd[:-2] + ["--log", str(tmp_path / "rerun.log")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "rerun.log").read_text()
    assert "resumed at epoch" in text
    history = pd.read_csv(_dirs(spec)[0] / "history.csv")
    assert list(history["epoch"]) == list(range(1, 61))  # each epoch exactly once
