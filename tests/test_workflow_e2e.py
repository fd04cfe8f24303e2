"""The real Snakemake DAG on a tiny config, in a temporary directory, checked through its outputs and MLflow.

Three datasets: the synthetic ICD events cohort, and the synthetic MRI cohort through a conv AE (`mri`)
and a VQ-VAE (`mri_vq`: the same cohort, prepared once; and a name that `mri` is a prefix of). Two
protocols: the paper's (epochs) and an equal-step budget with sqrt learning-rate scaling. Passed with
--configfile, so the default datasets must not run. (A user's own table outside data_synthetic/ is
tests/test_workflow_protocols.py's.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake_helpers import TINY_ICD, run_snakemake

MRI = {
    "kind": "mri",
    "path": "data_synthetic/mri",
    "subjects": "data_synthetic/mri/subjects.csv",
    "spatial_size": [16, 16, 16],
}
TINY = {
    "study": "tiny",
    "batch_sizes": [2, 16],
    "seeds": [0, 1],
    "protocols": {
        "paper": {"budget": "epochs", "lr": "fixed"},
        "steps": {"budget": "steps", "steps": 30, "lr": "sqrt", "reference_batch_size": 4},
    },
    "training": {"max_epochs": 3},
    "model": {"hidden_dims": [32], "latent_dim": 4},
    "downstream": {"folds": 3, "repeats": 1},
    "synthetic": {
        "ehr": {"n_subjects": 160, "n_phenotypes": 30, "seed": 3},
        "mri": {"n_subjects": 40, "shape": [32, 36, 28], "seed": 1},
    },
    "datasets": {
        "icd": TINY_ICD,
        "mri": MRI,
        "mri_vq": {**MRI, "model": {"kind": "vqvae", "codebook_size": 8, "embedding_dim": 2}},
    },
}
DATASETS = ["icd", "mri", "mri_vq"]


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_snakemake(workdir, "tiny.yaml", *args)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("study")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = run(work)
    assert result.returncode == 0, result.stderr[-4000:]
    return work


@pytest.fixture(scope="module")
def summary(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "results/tiny/summary.csv")


@pytest.mark.slow
def test_summary_has_one_row_per_member(summary: pd.DataFrame) -> None:
    assert sorted(summary["dataset"].unique()) == DATASETS  # not the default synthetic ones
    assert len(summary) == 3 * 2 * 2 * 2
    assert set(summary["protocol"]) == {"paper", "steps"}
    assert summary["lr_selected"].isna().all()  # no tuned protocol here
    paper, steps = summary[summary["protocol"] == "paper"], summary[summary["protocol"] == "steps"]
    # Fixed epochs: steps follow ceil(n_train / batch) per epoch, and the learning rate is the config's.
    assert (paper["epochs"] == 3).all() and (paper["steps"] == 3 * paper["steps_per_epoch"]).all()
    assert (paper["learning_rate"] == 0.001).all()
    # Equal steps: 30 optimizer steps at every batch size; lr = 0.001 * sqrt(B / 4).
    assert (steps["steps"] == 30).all()
    assert np.allclose(steps["learning_rate"], 0.001 * np.sqrt(steps["batch_size"] / 4))
    assert (steps["samples_seen"] <= 30 * steps["batch_size"]).all()
    for col in ("test_recon_loss", "val_recon_loss", "latent_effective_rank", "sex_auroc_mean",
                "samples_per_second", "gradient_noise_scale", "train_group", "latent_dead_units"):  # fmt: skip
        assert summary[col].notna().all(), col
    assert summary["sex_auroc_mean"].between(0, 1).all()
    assert summary["latent_effective_rank"].between(1, 4 + 1e-9).all()  # 4-wide latents (VQ: 2 × 2)
    mri = summary[summary["dataset"].str.startswith("mri")]
    assert summary.loc[~summary["dataset"].str.startswith("mri"), "laterality_r2_mean"].isna().all()
    assert mri["laterality_r2_mean"].notna().all()
    assert summary.loc[summary["dataset"] == "mri_vq", "codebook_perplexity"].between(1, 8).all()
    assert summary.loc[summary["dataset"] != "mri_vq", "codebook_perplexity"].isna().all()
    # Members of one cell train as one stacked group: one train_group per dataset × protocol × batch size.
    assert summary.groupby(["dataset", "protocol", "batch_size"])["train_group"].nunique().eq(1).all()
    for _, part in paper.groupby(["dataset", "seed"]):  # smaller batch = more steps at fixed epochs
        s = part.set_index("batch_size")["steps"]
        assert s[2] > s[16]


@pytest.mark.slow
def test_same_initial_state_across_batch_sizes_and_protocols(study: Path, summary: pd.DataFrame) -> None:
    for (dataset, seed), part in summary.groupby(["dataset", "seed"]):
        digests = {
            json.loads((study / "results/tiny" / dataset / p / f"bs{b}" / m / "train.json").read_text())[
                "init_sha256"
            ]
            for p, b, m in zip(part["protocol"], part["batch_size"], part["member"], strict=True)
        }
        assert len(digests) == 1, (dataset, seed)
    # mri and mri_vq read the same cohort with the same preprocessing: prepared once
    assert (study / "results/tiny/mri/prepared/features.npy").exists()
    assert not (study / "results/tiny/mri_vq/prepared").exists()


@pytest.mark.slow
def test_tables_baselines_noise_scale_stats_and_verdict(study: Path) -> None:
    baselines = pd.read_csv(study / "results/tiny/baselines.csv")
    widths = {"icd": "pca4", "mri": "pca4", "mri_vq": "pca4"}  # latent widths (VQ: 2 × 2)
    assert set(zip(baselines["dataset"], baselines["representation"], strict=True)) == {
        (d, r) for d in DATASETS for r in ("raw", widths[d])
    }
    noise = pd.read_csv(study / "results/tiny/noise_scale.csv")
    assert list(noise.columns) == ["dataset", "protocol", "batch_size", "seed", "point", "grad_sq_norm",
                                   "trace_cov", "gradient_noise_scale", "method"]  # fmt: skip
    init = noise[noise["point"] == "init"]
    assert len(init) == 3 * 2 and init["protocol"].isna().all() and init["batch_size"].isna().all()
    assert len(noise[noise["point"] == "trained"]) == 24
    assert (noise["gradient_noise_scale"] > 0).all() and set(noise["method"]) <= {"exact", "two_batch"}
    stats = pd.read_csv(study / "results/tiny/stats.csv")
    assert set(stats["protocol"]) == {"paper", "steps"}
    assert not stats["metric"].str.endswith("_folds").any()  # seed-level inference only
    wil = stats[(stats["test"] == "wilcoxon") & (stats["metric"] == "test_recon_loss")]
    assert wil["p_value"].isna().all() and wil["note"].str.contains("cannot reach").all()  # 2 seeds
    verdict = pd.read_csv(study / "results/tiny/verdict.csv")
    assert list(verdict.columns) == ["dataset", "protocol", "metric", "direction", "spearman_rho",
                                     "friedman_p", "holm_p_smallest_vs_largest", "n_seeds", "note"]  # fmt: skip
    assert set(verdict["direction"]) <= {"smaller_better", "larger_better", "no_evidence"}
    assert set(verdict.loc[verdict["dataset"] == "mri_vq", "metric"]) >= {
        "codebook_perplexity",
        "laterality_r2_mean",
    }
    folds = pd.read_csv(study / "results/tiny/folds.csv")
    assert len(folds) == 24 * 3 + 16 * 3 * 3  # sex AUROC everywhere, 3 laterality scores for MRI


@pytest.mark.slow
def test_mlflow_parents_children_and_figures(study: Path, summary: pd.DataFrame) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ae-batch-tiny")
    assert exp is not None and client.get_experiment_by_name("tiny") is None
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("ae_batch.level") == "dataset"}
    children = [r for r in runs if r.data.tags.get("ae_batch.level") == "grid_point"]
    assert sorted(r.info.run_name for r in parents.values()) == DATASETS
    assert len(children) == len(summary)
    for parent in parents.values():
        assert parent.info.status == "FINISHED"
        params = parent.data.params
        assert json.loads(params["batch_sizes"]) == [2, 16] and json.loads(params["seeds"]) == [0, 1]
        assert set(json.loads(params["protocols"])) == {"paper", "steps"} and int(params["n_test"]) > 0
        assert any(k.startswith("verdict.paper.test_recon_loss.") for k in parent.data.metrics)
        # figures of exactly this dataset: mri's parent holds no mri_vq figure
        name = parent.info.run_name
        figures = [f.path for kind in client.list_artifacts(parent.info.run_id, "figures")
                   for f in client.list_artifacts(parent.info.run_id, kind.path)]  # fmt: skip
        assert figures and all(Path(f).name.startswith(f"{name}__") for f in figures), (name, figures)
    starts = {p.info.run_id: p.info.start_time for p in parents.values()}
    ends = {p.info.run_id: p.info.end_time for p in parents.values()}
    for child in children:
        assert child.info.status == "FINISHED"
        parent_id = child.data.tags["mlflow.parentRunId"]
        assert starts[parent_id] <= child.info.start_time and child.info.end_time <= ends[parent_id]
        row = summary[summary["mlflow_run_id"] == child.info.run_id].iloc[0]
        assert child.data.params["batch_size"] == str(row["batch_size"])
        assert (
            child.data.params["protocol"] == row["protocol"]
            and child.data.params["dataset"] == row["dataset"]
        )
        assert float(child.data.params["learning_rate"]) == pytest.approx(row["learning_rate"])
        assert np.isclose(child.data.metrics["test_recon_loss"], row["test_recon_loss"])
        assert np.isclose(child.data.metrics["sex_auroc_mean"], row["sex_auroc_mean"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/loss")]
        assert len(steps) == len(set(steps)) >= 2  # one point per validation, each step once
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"history.csv", "eval.json", "folds.csv", "per_subject_mlflow.csv"} <= artifacts
    # Subject ids reach MLflow only hashed (mlflow.log_subject_ids defaults to false).
    child = children[0]
    row = summary[summary["mlflow_run_id"] == child.info.run_id].iloc[0]
    shared = pd.read_csv(
        client.download_artifacts(child.info.run_id, "per_subject_mlflow.csv", str(study / "dl"))
    )
    prepared = "mri" if row["dataset"].startswith("mri") else row["dataset"]
    ids = set(pd.read_csv(study / f"results/tiny/{prepared}/prepared/subjects.csv", dtype=str)["subject_id"])
    assert "subject_id" not in shared.columns and not ids & set(shared["subject_hash"].astype(str))


@pytest.mark.slow
def test_report_is_built(study: Path) -> None:
    result = run(study, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-2000:]
    html = (study / "report.html").read_text(errors="replace")
    assert len(html) > 100_000  # self-contained: figures embedded
    for name in ("icd__paper__learning_curves.png", "mri__paper__latent_projections.png", "summary.csv",
                 "verdict.csv", "noise_scale.csv", "stats.csv"):  # fmt: skip
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
    import urllib.request

    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_server_shows_the_study_over_rest(study: Path) -> None:
    """A real `mlflow server` on loopback over the study's database: experiment, parent/child runs,
    metrics and artifacts are visible through the REST API."""
    import os
    import signal
    import time
    import urllib.error

    port = _free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", f"sqlite:///{study / 'mlflow.db'}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=study, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                exp = _get(f"{base}/experiments/get-by-name?experiment_name=ae-batch-tiny")["experiment"]
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not answer within 90 s"
                time.sleep(0.5)
        runs = _get(f"{base}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 500})[
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
        assert len(parents) == 3 and len(children) == 24
        assert all(t["mlflow.parentRunId"] in parents for _, t in children)
        run_, _ = children[0]
        metrics = {m["key"]: m["value"] for m in run_["data"]["metrics"]}
        assert 0 <= metrics["sex_auroc_mean"] <= 1 and metrics["test_recon_loss"] > 0
        files = _get(f"{base}/artifacts/list?run_id={run_['info']['run_id']}").get("files", [])
        assert {"history.csv", "eval.json"} <= {f["path"] for f in files}
        parent_files = _get(f"{base}/artifacts/list?run_id={next(iter(parents))}").get("files", [])
        assert {"summary.csv", "verdict.csv", "figures"} <= {f["path"] for f in parent_files}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
