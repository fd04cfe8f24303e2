"""MLflow tracking: parent/child structure, replacement on rerun, stale runs, and 16 concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ae_batch import tracking


@pytest.fixture()
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _children(uri: str, study: str) -> list:
    mc = tracking.client(uri)
    exp = mc.get_experiment_by_name(study)
    runs = mc.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("ae_batch.level") == "grid_point"]


def test_child_runs_hang_under_one_parent_and_reruns_replace(uri: str, tmp_path: Path) -> None:
    first = tracking.start_child_run(uri, "s", "ehr", 4, 0, {"lr": 0.001})
    again = tracking.start_child_run(uri, "s", "ehr", 4, 0, {"lr": 0.001})  # a rerun of the same grid point
    other = tracking.start_child_run(uri, "s", "ehr", 8, 0, {"lr": 0.001})
    for run_id in (again, other):
        tracking.finish_run(uri, run_id)
    children = _children(uri, "s")
    assert sorted(r.info.run_id for r in children) == sorted([again, other])
    assert first not in {r.info.run_id for r in children}
    parent = tracking.ensure_parent_run(uri, "s", "ehr")
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent}
    assert {r.info.run_name for r in children} == {"bs4-seed0", "bs8-seed0"}
    # The artifact store sits beside the database, not in the working directory.
    exp = tracking.client(uri).get_experiment_by_name("s")
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_stale_running_runs_are_marked_failed(uri: str) -> None:
    killed = tracking.start_child_run(uri, "s", "ehr", 1, 0, {})  # never finished: a killed job
    done = tracking.start_child_run(uri, "s", "ehr", 2, 0, {})
    tracking.finish_run(uri, done)
    assert tracking.fail_stale_runs(uri, "s") == 1
    status = {r.info.run_id: r.info.status for r in _children(uri, "s")}
    assert status == {killed: "FAILED", done: "FINISHED"}


WRITER = textwrap.dedent(
    """
    import sys
    from ae_batch import tracking
    uri, i = sys.argv[1], int(sys.argv[2])
    run = tracking.start_child_run(uri, "conc", "ehr", i + 1, 0, {"batch_size": i + 1, "k": "v"})
    tracking.log_history(uri, run, [{"epoch": e, "step": e * 10, "train_loss": 1 / e, "val_loss": 2 / e}
                                    for e in range(1, 51)])
    tracking.log_metrics(uri, run, {"test_recon_loss": 0.1 * i, "sex_auroc_mean": 0.5})
    tracking.finish_run(uri, run)
    """
)


def test_sixteen_concurrent_jobs_log_without_failure(uri: str) -> None:
    tracking.ensure_experiment(
        uri, "conc"
    )  # created once before the fan-out, as the Snakefile's onstart does
    tracking.ensure_parent_run(uri, "conc", "ehr")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, str(i)], stderr=subprocess.PIPE, text=True)
        for i in range(16)
    ]
    errors = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in errors] == [0] * 16, [e for rc, e in errors if rc][:1]
    children = _children(uri, "conc")
    assert len(children) == 16
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.metrics["test_recon_loss"] for r in children) == pytest.approx(
        [0.1 * i for i in range(16)]
    )
    history = tracking.client(uri).get_metric_history(children[0].info.run_id, "val/loss")
    assert len(history) == 50
