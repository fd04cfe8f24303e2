"""The real Snakemake DAG on a tiny config, in a temporary directory, checked through its outputs and MLflow.

Three datasets: the synthetic ICD events cohort and the synthetic MRI cohort (both made by the
workflow's synthesize rules), and a user's own wide EHR CSV outside data_synthetic/ (kind: tabular),
passed with --configfile so the default datasets must not run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake_helpers import TINY_ICD, run_snakemake

from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort

TINY = {
    "study": "tiny",
    "batch_sizes": [2, 16],
    "seeds": [0, 1],
    "training": {"max_epochs": 3},
    "model": {"hidden_dims": [32], "latent_dim": 4},
    "downstream": {"folds": 3, "repeats": 1},
    "synthetic": {
        "ehr": {"n_subjects": 160, "n_phenotypes": 30, "seed": 3},
        "mri": {"n_subjects": 40, "shape": [32, 36, 28], "seed": 1},
    },
    "datasets": {
        "icd": TINY_ICD,
        "wide": {"kind": "tabular", "path": "mydata/ehr.csv", "drop_columns": ["n_phenotypes"]},
        "mri": {
            "kind": "mri",
            "path": "data_synthetic/mri",
            "subjects": "data_synthetic/mri/subjects.csv",
            "spatial_size": [16, 16, 16],
        },
    },
}


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_snakemake(workdir, "tiny.yaml", *args)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("study")
    synthesize_ehr_cohort(work / "mydata_src", n_subjects=150, n_phenotypes=20, seed=5)
    (work / "mydata").mkdir()
    (work / "mydata_src" / "tabular.csv").rename(work / "mydata" / "ehr.csv")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = run(work)
    assert result.returncode == 0, result.stderr[-4000:]
    return work


@pytest.mark.slow
def test_summary_has_one_row_per_grid_point(study: Path) -> None:
    summary = pd.read_csv(study / "results/tiny/summary.csv")
    assert sorted(summary["dataset"].unique()) == ["icd", "mri", "wide"]  # not the default synthetic ones
    assert len(summary) == 3 * 2 * 2
    assert set(zip(summary["batch_size"], summary["seed"], strict=True)) == {(2, 0), (2, 1), (16, 0), (16, 1)}
    # Fixed epochs: steps follow ceil(n_train / batch) per epoch.
    assert (summary["epochs"] == 3).all()
    assert (summary["steps"] == 3 * summary["steps_per_epoch"]).all()
    for col in (
        "test_recon_loss",
        "val_recon_loss",
        "latent_effective_rank",
        "sex_auroc_mean",
        "samples_per_second",
    ):
        assert summary[col].notna().all(), col
    assert summary["sex_auroc_mean"].between(0, 1).all()
    assert summary["latent_effective_rank"].between(1, 4).all()  # latent_dim 4
    ehr = summary[summary["dataset"] != "mri"]
    mri = summary[summary["dataset"] == "mri"]
    assert ehr["laterality_r2_mean"].isna().all()  # EHR: MRI-only columns are empty
    assert mri["laterality_r2_mean"].notna().all() and mri["laterality_mae_mean"].between(0, 2).all()
    assert summary["codebook_perplexity"].isna().all()  # conv AE: no codebook
    # Smaller batch = more steps at fixed epochs.
    for _, part in summary.groupby(["dataset", "seed"]):
        steps = part.set_index("batch_size")["steps"]
        assert steps[2] > steps[16]


@pytest.mark.slow
def test_same_initial_state_across_batch_sizes(study: Path) -> None:
    import json

    for dataset in ("icd", "wide", "mri"):
        for seed in (0, 1):
            digests = {
                json.loads((study / f"results/tiny/{dataset}/bs{b}/seed{seed}/train.json").read_text())[
                    "init_sha256"
                ]
                for b in (2, 16)
            }
            assert len(digests) == 1


@pytest.mark.slow
def test_baselines_folds_and_stats(study: Path) -> None:
    baselines = pd.read_csv(study / "results/tiny/baselines.csv")
    assert set(zip(baselines["dataset"], baselines["representation"], strict=True)) == {
        (d, r) for d in ("icd", "wide", "mri") for r in ("raw", "pca4")
    }
    folds = pd.read_csv(study / "results/tiny/folds.csv")
    # 3 folds × 1 repeat per grid point: sex AUROC everywhere, laterality (3 scores) for MRI.
    assert len(folds) == 8 * 3 + 4 * 3 * 4
    assert set(folds["metric"]) == {"sex_auroc", "laterality_mae", "laterality_r2", "laterality_spearman"}
    stats = pd.read_csv(study / "results/tiny/stats.csv")
    assert {"friedman", "wilcoxon", "spearman_trend"} <= set(stats["test"])
    # 2 seeds cannot give a meaningful Wilcoxon p: the table says so instead of printing one.
    wil = stats[(stats["test"] == "wilcoxon") & (stats["metric"] == "test_recon_loss")]
    assert wil["p_value"].isna().all() and wil["note"].str.contains("cannot reach").all()


@pytest.mark.slow
def test_mlflow_parent_and_child_runs(study: Path) -> None:
    from mlflow.tracking import MlflowClient

    summary = pd.read_csv(study / "results/tiny/summary.csv")
    client = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("ae_batch.level") == "dataset"}
    children = [r for r in runs if r.data.tags.get("ae_batch.level") == "grid_point"]
    assert sorted(r.info.run_name for r in parents.values()) == ["icd", "mri", "wide"]
    assert len(children) == 12
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] in parents
        row = summary[summary["mlflow_run_id"] == child.info.run_id].iloc[0]
        assert child.data.params["batch_size"] == str(row["batch_size"])
        assert child.data.params["dataset"] == row["dataset"]
        assert child.data.params["training.learning_rate"] == "0.001"
        assert np.isclose(child.data.metrics["test_recon_loss"], row["test_recon_loss"])
        assert np.isclose(child.data.metrics["sex_auroc_mean"], row["sex_auroc_mean"])
        history = client.get_metric_history(child.info.run_id, "val/loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"history.csv", "eval.json", "folds.csv", "per_subject_mlflow.csv"} <= artifacts
        # Subject ids reach MLflow only hashed (mlflow.log_subject_ids defaults to false).
        shared = pd.read_csv(
            client.download_artifacts(child.info.run_id, "per_subject_mlflow.csv", str(study / "dl"))
        )
        ids = set(
            pd.read_csv(study / f"results/tiny/{row['dataset']}/prepared/subjects.csv", dtype=str)[
                "subject_id"
            ]
        )
        assert "subject_id" not in shared.columns and not ids & set(shared["subject_hash"].astype(str))


@pytest.mark.slow
def test_report_is_built(study: Path) -> None:
    result = run(study, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-2000:]
    html = (study / "report.html").read_text(errors="replace")
    assert len(html) > 100_000  # self-contained: figures embedded
    for name in ("icd_learning_curves.png", "mri_latent_projections.png", "summary.csv", "stats.csv"):
        assert name in html


@pytest.mark.slow
def test_rerun_is_a_no_op(study: Path) -> None:
    result = run(study, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, payload: dict | None = None) -> dict:
    import json
    import urllib.request

    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_server_shows_the_study_over_rest(study: Path) -> None:
    """A real `mlflow server` on loopback over the study's database: experiment, parent/child runs,
    metrics and artifacts are visible through the REST API."""
    import time
    import urllib.error

    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{study / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=study,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                exp = _get(f"{base}/experiments/get-by-name?experiment_name=tiny")["experiment"]
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not answer within 90 s"
                time.sleep(0.5)
        runs = _get(f"{base}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})[
            "runs"
        ]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parents = {
            r["info"]["run_id"]
            for r, t in zip(runs, tags, strict=True)
            if t.get("ae_batch.level") == "dataset"
        }
        children = [
            (r, t) for r, t in zip(runs, tags, strict=True) if t.get("ae_batch.level") == "grid_point"
        ]
        assert len(parents) == 3 and len(children) == 12
        assert all(t["mlflow.parentRunId"] in parents for _, t in children)
        run, _ = children[0]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert 0 <= metrics["sex_auroc_mean"] <= 1 and metrics["test_recon_loss"] > 0
        history = _get(f"{base}/metrics/get-history?run_id={run['info']['run_id']}&metric_key=val/loss")[
            "metrics"
        ]
        assert sorted(m["step"] for m in history) == [1, 2, 3]
        files = _get(f"{base}/artifacts/list?run_id={run['info']['run_id']}").get("files", [])
        assert {"history.csv", "eval.json"} <= {f["path"] for f in files}
        parent_files = _get(f"{base}/artifacts/list?run_id={next(iter(parents))}").get("files", [])
        assert {"summary.csv", "stats.csv", "figures"} <= {f["path"] for f in parent_files}
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
