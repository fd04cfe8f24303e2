"""The workflow against an MLflow tracking server: PostgreSQL backend, proxied artifacts, basic-auth.

A throwaway PostgreSQL cluster (initdb/pg_ctl in a temp dir, as the ``postgres`` user, on a free port
of 127.0.0.1) holds the tracking store; ``mlflow server --app-name basic-auth`` keeps its own user
database (sqlite) in the temp dir too. The tiny study runs with ``--cores 2`` as a non-admin user whose
credentials exist only in the environment (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD).
Everything is checked through the server's REST API, and no password may be written anywhere.
Skipped, with the reason, without PostgreSQL (`apt-get install -y postgresql`) or the server extra
(`pip install -e ".[server]"`).
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml
from services import MlflowServer, Postgres, Unavailable, start_mlflow_server, start_postgres
from snakemake_helpers import TINY_ICD, snakemake_cmd, snakemake_env

pytestmark = [pytest.mark.server, pytest.mark.slow]

# /tmp/tiny.yaml of the design notes, one seed: 2 protocols × 2 batch sizes = 4 members.
TINY = {
    "study": "tiny",
    "batch_sizes": [2, 16],
    "seeds": [0],
    "training": {"max_epochs": 3},
    "model": {"hidden_dims": [32], "latent_dim": 4},
    "downstream": {"folds": 3, "repeats": 1},
    "protocols": {
        "paper": {"budget": "epochs", "lr": "fixed"},
        "steps": {"budget": "steps", "steps": 60, "lr": "sqrt"},
    },
    "synthetic": {"ehr": {"n_subjects": 160, "n_phenotypes": 30, "seed": 3}},
    "datasets": {"icd": TINY_ICD},
}
USER = "ae-batch"


@dataclass
class Deployment:
    server: MlflowServer
    postgres: Postgres
    artifacts: Path
    study: Path
    user_password: str
    admin_password: str
    db_password: str

    def api(
        self, method: str, path: str, auth: tuple[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        auth = auth if auth is not None else (USER, self.user_password)
        return requests.request(method, f"{self.server.url}{path}", auth=auth, timeout=30, **kw)

    def get(self, route: str, **params: Any) -> dict[str, Any]:
        response = self.api("GET", route, params=params)
        assert response.status_code == 200, (route, response.status_code, response.text[:500])
        return response.json()

    def experiment_id(self) -> str:
        found = self.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="ae-batch-tiny")
        return found["experiment"]["experiment_id"]

    def download(self, experiment_id: str, run_id: str, path: str) -> bytes:
        """An artifact through the server's proxy route (the client never sees the artifact store)."""
        route = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/{path}"
        response = self.api("GET", route)
        assert response.status_code == 200, (route, response.status_code)
        return response.content

    def search_runs(self, experiment_id: str, level: str) -> list[dict[str, Any]]:
        body = {
            "experiment_ids": [experiment_id],
            "filter": f"tags.`ae_batch.level` = '{level}'",
            "max_results": 1000,
        }
        response = self.api("POST", "/api/2.0/mlflow/runs/search", json=body)
        assert response.status_code == 200, response.text[:500]
        return response.json().get("runs", [])


def auth_ini(path: Path, database: Path) -> Path:
    """basic-auth's configuration: its user database in the temp dir (not ./basic_auth.db)."""
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{database}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    missing = [m for m in ("psycopg", "flask_wtf") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f'{", ".join(missing)} not installed: pip install -e ".[server]"')
    try:
        postgres = start_postgres()
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    root = tmp_path_factory.mktemp("tracking")
    passwords = {k: secrets.token_urlsafe(18) for k in ("db", "admin", "user", "secret_key")}
    try:
        backend = postgres.create_database("mlflow", passwords["db"], "mlflow")
        env = {
            **snakemake_env(),
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini(root / "basic_auth.ini", root / "basic_auth.db")),
            "MLFLOW_AUTH_ADMIN_PASSWORD": passwords["admin"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": passwords["secret_key"],
            "PGPASSWORD": passwords["db"],  # libpq reads it: the backend URI carries no password
        }
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        server = start_mlflow_server(
            mlflow, backend, root / "artifacts", root / "server.log", ("--app-name", "basic-auth"), env
        )
    except Unavailable as exc:
        postgres.stop()
        pytest.skip(str(exc))
    study = tmp_path_factory.mktemp("study")
    deployment = Deployment(
        server, postgres, root / "artifacts", study, passwords["user"], passwords["admin"], passwords["db"]
    )
    try:
        created = deployment.api(
            "POST",
            "/api/2.0/mlflow/users/create",
            auth=("admin", passwords["admin"]),
            json={"username": USER, "password": passwords["user"]},
        )
        assert created.status_code == 200, created.text[:500]

        (study / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "mlflow": {"tracking_uri": server.url}}))
        run_env = {
            **snakemake_env(),
            "MLFLOW_TRACKING_USERNAME": USER,
            "MLFLOW_TRACKING_PASSWORD": passwords["user"],
        }
        started = time.monotonic()
        result = subprocess.run(
            snakemake_cmd("tiny.yaml"), cwd=study, env=run_env, capture_output=True, text=True, timeout=1200
        )
        print(f"tiny study against the server (--cores 2): {time.monotonic() - started:.0f} s")
        (study / "snakemake.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr[-5000:]
        yield deployment
    finally:
        server.stop()
        postgres.stop()


def test_experiment_parent_and_one_finished_child_per_member(deployment: Deployment) -> None:
    summary = pd.read_csv(deployment.study / "results/tiny/summary.csv")
    assert len(summary) == 4
    experiment = deployment.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="ae-batch-tiny")
    experiment_id = experiment["experiment"]["experiment_id"]
    assert experiment["experiment"]["artifact_location"].startswith("mlflow-artifacts:")  # proxied

    parents = deployment.search_runs(experiment_id, "dataset")
    assert len(parents) == 1
    parent = parents[0]
    assert parent["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in parent["data"].get("params", [])}
    assert json.loads(params["batch_sizes"]) == [2, 16] and json.loads(params["seeds"]) == [0]
    assert set(json.loads(params["protocols"])) == {"paper", "steps"}
    parent_metrics = {m["key"] for m in parent["data"].get("metrics", [])}
    assert any(k.startswith("verdict.paper.test_recon_loss.") for k in parent_metrics), sorted(parent_metrics)
    # the experiment was created by the non-admin user of the environment (its creator gets MANAGE;
    # only an admin may read permissions)
    permission = deployment.api(
        "GET",
        "/api/3.0/mlflow/users/permissions/get",
        auth=("admin", deployment.admin_password),
        params={"username": USER, "resource_type": "experiment", "resource_id": experiment_id},
    )
    assert permission.status_code == 200, permission.text[:500]
    assert permission.json()["permission"] == "MANAGE"

    children = deployment.search_runs(experiment_id, "grid_point")
    assert len(children) == len(summary)
    assert {c["info"]["status"] for c in children} == {"FINISHED"}
    for child in children:
        tags = {t["key"]: t["value"] for t in child["data"].get("tags", [])}
        assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]
    by_id = {c["info"]["run_id"]: c for c in children}
    assert set(by_id) == set(summary["mlflow_run_id"])
    for row in summary.itertuples():
        metrics = {m["key"]: m["value"] for m in by_id[row.mlflow_run_id]["data"]["metrics"]}
        assert metrics["test_recon_loss"] == pytest.approx(row.test_recon_loss, rel=1e-12)
        assert metrics["val_recon_loss"] == pytest.approx(row.val_recon_loss, rel=1e-12)
        history = deployment.get(
            "/api/2.0/mlflow/metrics/get-history", run_id=row.mlflow_run_id, metric_key="val/loss"
        )["metrics"]
        steps = [m["step"] for m in history]
        assert len(steps) >= 3 and len(set(steps)) == len(steps), steps  # every validation point, once


def _files(deployment: Deployment, run_id: str, path: str = "") -> list[str]:
    """Every artifact file of a run, listed through the server (recursively)."""
    listing = deployment.get("/api/2.0/mlflow/artifacts/list", run_id=run_id, path=path)
    files: list[str] = []
    for entry in listing.get("files", []):
        if entry["is_dir"]:
            files += _files(deployment, run_id, entry["path"])
        else:
            files.append(entry["path"])
    return files


def test_artifacts_are_listed_and_downloaded_through_the_server(deployment: Deployment) -> None:
    summary = pd.read_csv(deployment.study / "results/tiny/summary.csv")
    experiment_id = deployment.experiment_id()
    for row in summary.itertuples():
        files = _files(deployment, row.mlflow_run_id)
        assert {"history.csv", "eval.json"} <= set(files), files
        member = deployment.study / f"results/tiny/icd/{row.protocol}/bs{row.batch_size}/{row.member}"
        served = deployment.download(experiment_id, row.mlflow_run_id, "history.csv")
        assert served == (member / "history.csv").read_bytes()  # what the train job wrote, byte for byte
    parent = deployment.search_runs(experiment_id, "dataset")[0]["info"]["run_id"]
    files = _files(deployment, parent)
    assert "verdict.csv" in files, files
    for path in files:  # the server's artifact store (--artifacts-destination), served back
        stored = deployment.artifacts / experiment_id / parent / "artifacts" / path
        assert deployment.download(experiment_id, parent, path) == stored.read_bytes(), path


def test_requests_without_the_right_password_are_refused(deployment: Deployment) -> None:
    path = "/api/2.0/mlflow/experiments/get-by-name"
    params = {"experiment_name": "ae-batch-tiny"}
    assert requests.get(f"{deployment.server.url}{path}", params=params, timeout=30).status_code == 401
    assert (
        deployment.api(
            "GET", path, auth=(USER, "wrong-" + deployment.user_password), params=params
        ).status_code
        == 401
    )
    assert (
        deployment.api("GET", path, auth=("admin", deployment.user_password), params=params).status_code
        == 401
    )
    assert deployment.api("GET", path, params=params).status_code == 200


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path} contains password #{i}" for i, n in enumerate(needles) if n in data]
    return hits


def test_no_password_is_written_anywhere(deployment: Deployment) -> None:
    needles = [
        p.encode() for p in (deployment.user_password, deployment.admin_password, deployment.db_password)
    ]
    hits: list[str] = []
    for folder in (deployment.study / "results", deployment.study / ".snakemake", deployment.artifacts):
        assert folder.is_dir(), folder
        hits += _files_containing(folder, needles)
    dump = deployment.postgres.dump("mlflow")
    assert "ae_batch.level" in dump  # the dump holds the runs (a sanity check on the grep below)
    hits += [f"pg_dump mlflow contains password #{i}" for i, n in enumerate(needles) if n.decode() in dump]
    assert not hits, hits
