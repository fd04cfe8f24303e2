"""Interruption: kill a study at any point, run the README command again (no `--unlock`), and get the
uninterrupted result; a killed train job resumes from its last epoch; SIGTERM (SLURM's time limit)
saves and exits; a second study in the same folder is refused while one runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import TINY_ICD, run_snakemake, snakemake_cmd, snakemake_env, write_config

from ae_batch.stages.aggregate import TIMING_COLUMNS

# 10 epochs of a model large enough that an epoch takes a visible fraction of a second at batch 1.
CONFIG = {
    "study": "kill",
    "batch_sizes": [1, 16],
    "seeds": [0, 1],
    "protocols": {"paper": {"budget": "epochs", "lr": "fixed"}},
    "training": {"max_epochs": 10},
    "model": {"hidden_dims": [256, 128], "latent_dim": 8},
    "downstream": {"folds": 3, "repeats": 1},
    "synthetic": {"ehr": {"n_subjects": 300, "n_phenotypes": 60, "seed": 3}},
    "datasets": {"icd": TINY_ICD},
}


def _start(work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        snakemake_cmd("study.yaml"), cwd=work, env=snakemake_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def _kill_when(
    work: Path, trigger: Callable[[Path], bool], sig: int = signal.SIGKILL, timeout: float = 300
) -> bool:
    """Start the study; when ``trigger`` holds, send ``sig`` to its whole process group (Snakemake and
    its jobs, as Ctrl-C or a killed node would); True if it fired."""
    proc = _start(work)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if trigger(work):
                os.killpg(proc.pid, sig)
                proc.wait(timeout=120)
                return True
            time.sleep(0.02)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _log_has(pattern: str, text: str = "") -> Callable[[Path], bool]:
    def check(work: Path) -> bool:
        return any(
            text in log.read_text(errors="replace") for log in (work / "results/kill/logs").glob(pattern)
        )

    return check


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("reference")
    write_config(work, CONFIG)
    result = run_snakemake(work, "study.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def _same_tables(work: Path, reference: Path) -> None:
    ref = pd.read_csv(reference / "results/kill/summary.csv").drop(columns=TIMING_COLUMNS)
    got = pd.read_csv(work / "results/kill/summary.csv").drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(got, ref)  # identical, not just close: same config + seed ⇒ same result
    for name in ("stats.csv", "verdict.csv", "baselines.csv", "folds.csv", "noise_scale.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(work / "results/kill" / name), pd.read_csv(reference / "results/kill" / name)
        )


@pytest.mark.slow
def test_killed_at_four_points_then_the_readme_command_resumes(tmp_path: Path, reference: Path) -> None:
    work = tmp_path / "killed"
    write_config(work, CONFIG)
    kill_points = {
        "during prepare": _log_has("prepare/*.log"),
        "mid-training, after epoch 3": _log_has("train/*bs1*.log", "epoch 3/10"),
        "during evaluation": _log_has("evaluate/*.log"),
        "during aggregation": _log_has("aggregate.log"),
    }
    killed = [name for name, trigger in kill_points.items() if _kill_when(work, trigger)]
    assert killed == list(kill_points), f"only killed {killed}"
    result = run_snakemake(work, "study.yaml")  # the README command: no --unlock
    assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(p.read_text() for p in (work / "results/kill/logs/train").glob("*bs1*.log"))
    assert "resumed at epoch 4" in logs  # the checkpoint of epoch 3, not a restart
    for member in ("seed0", "seed1"):
        history = pd.read_csv(work / f"results/kill/icd/paper/bs1/{member}/history.csv")
        assert list(history["epoch"]) == list(range(1, 11))  # each epoch exactly once
    assert not list((work / "results/kill").glob("icd/*/bs*/groups/*.resume.pt"))  # no checkpoint left
    _same_tables(work, reference)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ae-batch-kill")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    children = [r for r in runs if r.data.tags.get("ae_batch.level") == "grid_point"]
    assert sorted(r.info.run_name for r in children) == [
        f"paper-bs{b}-seed{s}" for b in (1, 16) for s in (0, 1)
    ]
    assert {r.info.status for r in children} == {"FINISHED"}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/loss")]
        assert len(steps) == len(set(steps)) == 10  # one per epoch, no duplicate after the resume
    parents = [r for r in runs if r.data.tags.get("ae_batch.level") == "dataset"]
    assert [p.info.status for p in parents] == ["FINISHED"]


@pytest.mark.slow
def test_sigterm_to_a_train_job_saves_and_the_study_fails_honestly_then_completes(tmp_path: Path) -> None:
    """What SLURM sends at a job's time limit: the job checkpoints and exits; Snakemake reports the
    failed job with its own message first; MLflow's parent run says FAILED; a rerun resumes and completes."""
    from ae_batch.io import read_json

    epochs = 25
    work = tmp_path / "term"
    write_config(work, {**CONFIG, "batch_sizes": [1], "training": {"max_epochs": epochs}})
    proc = _start(work)
    deadline = time.monotonic() + 300
    target = None
    while target is None:
        assert proc.poll() is None and time.monotonic() < deadline, "training never started"
        for path in (work / "results/kill/icd/paper/bs1/groups").glob("*.progress.json"):
            state = read_json(path)
            if state.get("status") == "training" and 2 <= state.get("epoch", 0) <= epochs - 10:
                target = state["pid"]  # well inside training: the signal lands between two steps
        time.sleep(0.02)
    os.kill(target, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    message = "interrupted (SIGTERM) at epoch"
    assert message in out, out[-4000:]
    assert out.index(message) < out.index("Error in rule train")  # the job's own words come first
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ae-batch-kill")
    parents = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("ae_batch.level") == "dataset"
    ]
    assert [p.info.status for p in parents] == ["FAILED"]
    result = run_snakemake(work, "study.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed at epoch" in "".join(
        p.read_text() for p in (work / "results/kill/logs/train").glob("*bs1*.log")
    )
    for member in ("seed0", "seed1"):
        history = pd.read_csv(work / f"results/kill/icd/paper/bs1/{member}/history.csv")
        assert list(history["epoch"]) == list(range(1, epochs + 1))  # each epoch exactly once
    parents = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("ae_batch.level") == "dataset"
    ]
    assert [p.info.status for p in parents] == ["FINISHED"]


@pytest.mark.slow
def test_a_second_study_in_the_same_folder_is_refused_while_one_runs(tmp_path: Path) -> None:
    work = tmp_path / "busy"
    write_config(work, CONFIG)
    first = _start(work)
    try:
        deadline = time.monotonic() + 120
        while not (work / ".ae-batch.lock").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = run_snakemake(work, "study.yaml")
        assert second.returncode != 0
        assert "another study is running in this folder" in second.stdout + second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
