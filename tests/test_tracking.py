"""MLflow tracking: experiment naming, parents and children from member files, idempotent reruns,
stale runs, credentials refused in URIs, and 16 concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ae_batch import tracking
from ae_batch.errors import ConfigError
from ae_batch.io import write_csv, write_json
from ae_batch.stages.track import track_dataset
from ae_batch.stages.tracking_init import finish_tracking, init_tracking


@pytest.fixture()
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _runs(uri: str, experiment: str, level: str) -> list[Any]:
    mc = tracking.client(uri)
    exp = mc.get_experiment_by_name(experiment)
    runs = mc.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("ae_batch.level") == level]


def _member(root: Path, seed: int, loss: float = 0.1, lr: float = 1e-3) -> Path:
    """A finished member's files, as the train and evaluate jobs write them."""
    folder = root / "ehr" / "paper" / "bs4" / f"seed{seed}"
    train = {
        "dataset": "ehr", "protocol": "paper", "batch_size": 4, "seed": seed, "learning_rate": lr,
        "member": f"seed{seed}", "train_group": "ehr/paper/bs4/g0000000000", "n_train": 72,
        "init_sha256": "ab", "epochs": 2, "steps": 36, "best_epoch": 2, "val_recon_loss": 0.2,
        "started_ms": 1_700_000_000_000, "diverged": False,
    }  # fmt: skip
    write_json(folder / "train.json", train)
    write_json(
        folder / "eval.json",
        {
            "member": f"seed{seed}",
            "test_recon_loss": loss,
            "lr_selected": None,
            "finished_ms": 1_700_000_060_000,
        },
    )
    write_csv(
        folder / "history.csv",
        pd.DataFrame(
            {
                "epoch": [1, 2],
                "step": [18, 36],
                "train_loss": [0.3, 0.2],
                "val_loss": [0.25, 0.2],
                "seconds": [1.0, 2.0],
            }
        ),
    )
    write_csv(folder / "folds.csv", pd.DataFrame(columns=["repeat", "fold", "metric", "value"]))
    return folder


def _manifest(root: Path, seeds: list[int]) -> Path:
    spec = {
        "id": "g0000000000",
        "protocol": {"budget": "epochs", "epochs": 2, "steps": None, "lr": "fixed", "reference_batch_size": 32, "validate_every_steps": None},
        "model": {"kind": "mlp", "latent_dim": 4},
        "training": {"optimizer": "adam"},
        "prepared": str(root / "ehr" / "prepared"),
        "members": [{"name": f"seed{s}", "dir": str(root / "ehr" / "paper" / "bs4" / f"seed{s}")} for s in seeds],
    }  # fmt: skip
    groups = root / "ehr" / "paper" / "bs4" / "groups"
    write_json(groups / "g0000000000.spec.json", spec)
    write_json(groups / "g0000000000.eval.json", {"id": "g0000000000"})
    return groups / "g0000000000.eval.json"


def test_children_under_their_parent_with_params_metrics_history_and_times(uri: str, tmp_path: Path) -> None:
    for s in (0, 1):
        _member(tmp_path, s)
    init_tracking(uri, "ae-batch-s", "s", ["ehr"], tmp_path, tmp_path / "salt")
    table = track_dataset([_manifest(tmp_path, [0, 1])], tmp_path / "runs.csv", uri, "ae-batch-s", "s", "ehr")
    assert list(table["key"]) == ["ehr/paper/bs4/seed0", "ehr/paper/bs4/seed1"]
    parents = _runs(uri, "ae-batch-s", "dataset")
    children = _runs(uri, "ae-batch-s", "grid_point")
    assert [p.info.run_name for p in parents] == ["ehr"] and len(children) == 2
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        assert (child.info.start_time, child.info.end_time) == (1_700_000_000_000, 1_700_000_060_000)
        assert child.data.params["protocol"] == "paper" and child.data.params["learning_rate"] == "0.001"
        assert child.data.metrics["test_recon_loss"] == pytest.approx(0.1)
        history = tracking.client(uri).get_metric_history(child.info.run_id, "val/loss")
        assert sorted(m.step for m in history) == [18, 36]  # by optimizer step, each once
    assert {c.info.run_name for c in children} == {"paper-bs4-seed0", "paper-bs4-seed1"}
    exp = tracking.client(uri).get_experiment_by_name("ae-batch-s")
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()  # beside the database


def test_rerun_leaves_unchanged_members_untouched_and_replaces_changed_ones(uri: str, tmp_path: Path) -> None:
    _member(tmp_path, 0)
    init_tracking(uri, "e", "s", ["ehr"], tmp_path)
    first = track_dataset([_manifest(tmp_path, [0])], tmp_path / "r.csv", uri, "e", "s", "ehr")
    _member(tmp_path, 1)  # a seed was added
    second = track_dataset([_manifest(tmp_path, [0, 1])], tmp_path / "r.csv", uri, "e", "s", "ehr")
    assert second["run_id"].iloc[0] == first["run_id"].iloc[0]  # untouched
    _member(tmp_path, 0, loss=0.05)  # re-evaluated (e.g. downstream settings changed)
    third = track_dataset([_manifest(tmp_path, [0, 1])], tmp_path / "r.csv", uri, "e", "s", "ehr")
    assert (
        third["run_id"].iloc[0] != first["run_id"].iloc[0]
        and third["run_id"].iloc[1] == second["run_id"].iloc[1]
    )
    children = _runs(uri, "e", "grid_point")
    assert len(children) == 2  # the replaced run is gone: one run per member
    metric = {c.data.tags["seed"]: c.data.metrics["test_recon_loss"] for c in children}
    assert metric == {"0": pytest.approx(0.05), "1": pytest.approx(0.1)}


def test_parents_are_running_during_a_study_then_finished_or_failed(uri: str, tmp_path: Path) -> None:
    init_tracking(uri, "e", "s", ["a", "b"], tmp_path)
    assert {p.info.status for p in _runs(uri, "e", "dataset")} == {"RUNNING"}
    finish_tracking(uri, "e", "s", ["a", "b"], "FAILED")
    assert {p.info.status for p in _runs(uri, "e", "dataset")} == {"FAILED"}
    init_tracking(uri, "e", "s", ["a", "b"], tmp_path)  # the rerun
    finish_tracking(uri, "e", "s", ["a", "b"], "FINISHED")
    parents = _runs(uri, "e", "dataset")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}


def test_stale_running_children_are_marked_failed(uri: str) -> None:
    exp = tracking.ensure_experiment(uri, "e")
    parent = tracking.ensure_parent_run(uri, exp, "s", "ehr")
    killed = tracking.replace_run(uri, exp, "s/ehr/a", {tracking.LEVEL_TAG: "grid_point"}, "a", None)
    done = tracking.replace_run(uri, exp, "s/ehr/b", {tracking.LEVEL_TAG: "grid_point"}, "b", None)
    tracking.set_status(uri, done, "FINISHED")
    assert tracking.fail_stale_runs(uri, exp) == 1
    status = {r.info.run_id: r.info.status for r in _runs(uri, "e", "grid_point")}
    assert status == {killed: "FAILED", done: "FINISHED"}
    assert tracking.client(uri).get_run(parent).info.status == "RUNNING"  # parents are not touched


def test_credentials_in_the_uri_are_refused() -> None:
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME"):
        tracking.client("http://alice:secret@127.0.0.1:5000")
    assert tracking.check_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


WRITER = textwrap.dedent(
    """
    import sys
    from ae_batch import tracking
    uri, i = sys.argv[1], int(sys.argv[2])
    exp = tracking.ensure_experiment(uri, "conc")
    parent = tracking.ensure_parent_run(uri, exp, "s", "ehr")
    tags = {"mlflow.parentRunId": parent, tracking.LEVEL_TAG: "grid_point"}
    run = tracking.replace_run(uri, exp, f"s/ehr/bs{i + 1}", tags, f"bs{i + 1}", None)
    tracking.log_params(uri, run, {"batch_size": i + 1, "k": "v"})
    rows = [{"epoch": e, "step": e * 10, "train_loss": 1 / e, "val_loss": 2 / e, "seconds": e} for e in range(1, 51)]
    tracking.log_history(uri, run, rows, 0)
    tracking.log_metrics(uri, run, {"test_recon_loss": 0.1 * i, "sex_auroc_mean": 0.5})
    tracking.set_status(uri, run, "FINISHED")
    """
)


def test_sixteen_concurrent_jobs_log_without_failure(uri: str) -> None:
    exp = tracking.ensure_experiment(uri, "conc")  # created once before the fan-out, as onstart does
    tracking.ensure_parent_run(uri, exp, "s", "ehr")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, str(i)], stderr=subprocess.PIPE, text=True)
        for i in range(16)
    ]
    errors = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in errors] == [0] * 16, [e for rc, e in errors if rc][:1]
    children = _runs(uri, "conc", "grid_point")
    assert len(children) == 16 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.metrics["test_recon_loss"] for r in children) == pytest.approx(
        [0.1 * i for i in range(16)]
    )
    assert len(tracking.client(uri).get_metric_history(children[0].info.run_id, "val/loss")) == 50
