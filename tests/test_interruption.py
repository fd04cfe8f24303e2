"""Kill the whole `snakemake` process group with SIGKILL at several points of a tiny study; after
`snakemake --unlock`, the README command completes and the summary equals an uninterrupted run's.

Also the determinism check: the uninterrupted reference and the killed-and-resumed run are two runs of
the same config, so their metric columns must be identical; and MLflow must show exactly one FINISHED
child per grid point, no run left RUNNING.
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
import yaml
from snakemake_helpers import TINY_ICD, run_snakemake, snakemake_cmd, snakemake_env

CONFIG = {
    "study": "kill",
    "batch_sizes": [2, 16],
    "seeds": [0, 1],
    "training": {"max_epochs": 3},
    "model": {"hidden_dims": [32], "latent_dim": 4},
    "downstream": {"folds": 3, "repeats": 1},
    "synthetic": {"ehr": {"n_subjects": 160, "n_phenotypes": 30, "seed": 3}},
    "datasets": {
        "icd": TINY_ICD,
    },
}
# Columns that measure the machine, not the model.
TIMING = ["train_seconds", "samples_per_second", "mlflow_run_id"]


def _run(work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_snakemake(work, "study.yaml", *extra)


def _kill_when(work: Path, trigger: Callable[[Path], bool], timeout: float = 240) -> bool:
    """Start the study, SIGKILL its whole process group as soon as ``trigger`` holds; True if it did."""
    proc = subprocess.Popen(
        snakemake_cmd("study.yaml"),
        cwd=work,
        env=snakemake_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if trigger(work):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.05)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _log_has(pattern: str, text: str = "") -> Callable[[Path], bool]:
    def check(work: Path) -> bool:
        for log in (work / "results/kill/logs").glob(pattern):
            if text in log.read_text(errors="replace"):
                return True
        return False

    return check


def _study(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "study.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp


@pytest.mark.slow
def test_killed_at_four_points_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    reference = _study(tmp_path / "reference")
    result = _run(reference)
    assert result.returncode == 0, result.stderr[-3000:]

    work = _study(tmp_path / "killed")
    kill_points = {
        "during prepare": _log_has("prepare/*.log"),
        "mid-training": _log_has("train/*.log", "epoch 1/"),
        "during evaluation": _log_has("evaluate/*.log"),
        "during aggregation": _log_has("aggregate.log"),
    }
    killed = []
    for name, trigger in kill_points.items():
        if _kill_when(work, trigger):
            killed.append(name)
        _run(work, "--unlock")
    assert killed == list(kill_points), f"only killed {killed}"
    result = _run(work)  # the README command (the default profile adds --rerun-incomplete)
    assert result.returncode == 0, result.stderr[-3000:]

    ref = pd.read_csv(reference / "results/kill/summary.csv").drop(columns=TIMING)
    got = pd.read_csv(work / "results/kill/summary.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(got, ref)  # identical, not just close: same config + seed ⇒ same result
    assert len(got) == 4
    for name in ("stats.csv", "baselines.csv", "folds.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(work / "results/kill" / name), pd.read_csv(reference / "results/kill" / name)
        )

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("kill")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    children = [r for r in runs if r.data.tags.get("ae_batch.level") == "grid_point"]
    assert sorted(r.info.run_name for r in children) == ["bs16-seed0", "bs16-seed1", "bs2-seed0", "bs2-seed1"]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert not [r for r in runs if r.info.status == "RUNNING"]
