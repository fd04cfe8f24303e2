"""The workflow on a real SLURM, through profiles/slurm, against an MLflow tracking server.

A single-node SLURM (munge + slurmctld + slurmd from Debian's slurm-wlm, started by tests/services.py,
or one already running) runs every job of a tiny study with sbatch; the study's summary must equal a
local run's, and MLflow must hold exactly one finished run per member. Skipped, with the reason, where
SLURM or the executor plugin is missing (`apt-get install -y slurm-wlm munge`, `pip install -e ".[slurm]"`).

A fast test needs no SLURM: a cluster executor with the default sqlite tracking store is refused
before any job is submitted.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from services import MlflowServer, SlurmCluster, Unavailable, start_mlflow_server, start_slurm
from snakemake_helpers import REPO, SNAKEMAKE, TINY_EHR_STUDY, snakemake_env

from ae_batch.stages.aggregate import TIMING_COLUMNS

PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
needs_plugin = pytest.mark.skipif(
    not PLUGIN, reason='snakemake-executor-plugin-slurm is not installed: pip install -e ".[slurm]"'
)

# The session's tiny EHR study (tests/snakemake_helpers.py): 2 protocols × 2 batch sizes × 2 seeds = 8
# members in 4 train groups; its local run (tests/conftest.py ehr_study, sqlite, --cores 2) is the reference.
TINY = TINY_EHR_STUDY

# What this test's SLURM needs on top of profiles/slurm: it has no accounting (sacct fails), so job
# states come from squeue; keep every job's SLURM log (the proof it ran as a SLURM job); poll often.
TEST_PROFILE = {
    "slurm-status-command": "squeue",
    "slurm-no-account": True,
    "slurm-keep-successful-logs": True,
    "slurm-init-seconds-before-status-checks": 2,
    "latency-wait": 10,
}


def write_profile(directory: Path, extra: dict[str, object]) -> Path:
    """A copy of profiles/slurm with ``extra`` on top (a user's own copy of the profile, in effect)."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({**profile, **extra}))
    return directory


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    if not PLUGIN:
        pytest.skip('snakemake-executor-plugin-slurm is not installed: pip install -e ".[slurm]"')
    try:
        cluster = start_slurm()
    except Unavailable as exc:
        pytest.skip(f"no SLURM: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A plain ``mlflow server`` on 127.0.0.1 over an sqlite file (the server is the only writer)."""
    root = tmp_path_factory.mktemp("mlflow_server")
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    try:
        server = start_mlflow_server(
            mlflow, f"sqlite:///{root}/mlflow.db", root / "artifacts", root / "server.log"
        )
    except Unavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studies(
    slurm: SlurmCluster,
    tracking_server: MlflowServer,
    ehr_study: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """The same study run locally (the session's, sqlite, --cores 2) and on SLURM (the server)."""
    cluster = tmp_path_factory.mktemp("cluster")
    (cluster / "tiny.yaml").write_text(
        yaml.safe_dump({**TINY, "mlflow": {"tracking_uri": tracking_server.url}})
    )
    profile = write_profile(cluster / "profile", TEST_PROFILE)
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        "tiny.yaml",
        "--workflow-profile",
        str(profile),
    ]
    started = time.monotonic()
    result = subprocess.run(
        cmd, cwd=cluster, env=slurm.client_env(snakemake_env()), capture_output=True, text=True, timeout=1200
    )
    elapsed = time.monotonic() - started
    (cluster / "snakemake.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-6000:]
    print(f"SLURM run of the tiny study: {elapsed:.0f} s")
    return {"local": ehr_study, "cluster": cluster}


def slurm_logs(workdir: Path, rule: str) -> dict[str, Path]:
    """The SLURM logs the plugin wrote for ``rule``: job id → log (.snakemake/slurm_logs/rule_<rule>/...)."""
    logs = sorted((workdir / ".snakemake/slurm_logs" / f"rule_{rule}").rglob("*.log"))
    return {log.stem: log for log in logs}


@pytest.mark.slurm
@pytest.mark.slow
def test_every_train_and_evaluate_job_ran_as_a_slurm_job(
    studies: dict[str, Path], slurm: SlurmCluster
) -> None:
    cluster = studies["cluster"]
    groups = sorted((cluster / "results/tiny/icd").glob("*/bs*/groups/*.spec.json"))
    assert len(groups) == 4  # 2 protocols × 2 batch sizes: one group each, both seeds in it
    job_ids: set[str] = set()
    for rule in ("train", "evaluate"):
        logs = slurm_logs(cluster, rule)
        assert len(logs) == len(groups), (rule, sorted(logs))
        assert all(re.fullmatch(r"\d+", job_id) for job_id in logs), sorted(logs)
        for log in logs.values():  # the job step ran this rule inside the allocation
            assert f"rule {rule}:" in log.read_text() or f"localrule {rule}:" in log.read_text(), log
        job_ids |= set(logs)
    assert len(job_ids) == 2 * len(groups)  # one SLURM job each
    if slurm.ours:  # our cluster keeps finished jobs for MinJobAge=600 s: SLURM saw them finish
        queue = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i %T"],
            env=slurm.client_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        states = dict(line.split() for line in queue.splitlines())
        assert {states.get(j) for j in job_ids} == {"COMPLETED"}, states


@pytest.mark.slurm
@pytest.mark.slow
def test_cluster_summary_equals_local_summary(studies: dict[str, Path]) -> None:
    local = pd.read_csv(studies["local"] / "results/tiny/summary.csv")
    cluster = pd.read_csv(studies["cluster"] / "results/tiny/summary.csv")
    assert len(local) == 8
    keep = [c for c in local.columns if c not in TIMING_COLUMNS]
    assert list(cluster.columns) == list(local.columns)
    pd.testing.assert_frame_equal(cluster[keep], local[keep], check_exact=True)


@pytest.mark.slurm
@pytest.mark.slow
def test_one_finished_mlflow_run_per_member(studies: dict[str, Path], tracking_server: MlflowServer) -> None:
    from mlflow.tracking import MlflowClient

    summary = pd.read_csv(studies["cluster"] / "results/tiny/summary.csv")
    client = MlflowClient(tracking_server.url)
    experiment = client.get_experiment_by_name("ae-batch-tiny")
    assert experiment is not None
    children = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`ae_batch.level` = 'grid_point'", max_results=1000
    )
    assert len(children) == len(summary)
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.info.run_id for r in children} == set(summary["mlflow_run_id"])
    by_id = {r.info.run_id: r for r in children}
    for row in summary.itertuples():
        run = by_id[row.mlflow_run_id]
        assert run.data.metrics["test_recon_loss"] == pytest.approx(row.test_recon_loss, rel=1e-9)
    parents = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`ae_batch.level` = 'dataset'"
    )
    assert [p.info.status for p in parents] == ["FINISHED"]


@needs_plugin
def test_cluster_executor_refuses_sqlite_tracking(tmp_path: Path) -> None:
    """`--executor slurm` with the default ``sqlite:///mlflow.db``: refused before any job, naming
    sqlite and the README's server recipe. SLURM_CONF is an empty file (SLURM's tools fail at once), so
    nothing could reach a real cluster even if the refusal were missing."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "empty-slurm.conf").touch()
    env = {**snakemake_env(), "SLURM_CONF": str(tmp_path / "empty-slurm.conf")}
    cmd = [
        str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml",
        "--workflow-profile", "slurm", "--slurm-status-command", "squeue",
    ]  # fmt: skip
    try:
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:  # it went on to submit jobs (sbatch retries for minutes)
        pytest.fail(f"not refused within 120 s:\n{(exc.stderr or b'')[-3000:]!r}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "sqlite" in output and "MLflow on a tracking server" in output, output[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # not even the tracking store was touched
    assert not (tmp_path / ".snakemake/slurm_logs").exists()  # no job was submitted
    assert not (tmp_path / "data_synthetic").exists()


def _job_resources(output: str) -> dict[str, list[str]]:
    """rule → the ``resources:`` line of each of its jobs in a dry run's listing."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            rule = stripped.split()[1].rstrip(":")
        elif rule and stripped.startswith("resources:"):
            jobs.setdefault(rule, []).append(stripped)
            rule = None
    return jobs


@pytest.mark.parametrize("accelerator", ["cuda", "cpu"])
def test_train_and_evaluate_jobs_ask_for_a_gpu_when_the_config_asks_for_cuda(
    tmp_path: Path, accelerator: str
) -> None:
    """What the SLURM plugin turns into `--gpus=1`: a `gpu=1` resource on train and evaluate jobs, and on
    no other, when `training.accelerator` asks for CUDA; none with `cpu` (checked in a dry run)."""
    config = {**TINY, "training": {**TINY["training"], "accelerator": accelerator}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml", "-n", "--cores", "2"],
        cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_resources(result.stdout + result.stderr)
    assert len(jobs.get("train", [])) == 4 and len(jobs.get("evaluate", [])) == 4, sorted(jobs)
    for rule, lines in jobs.items():
        wants_gpu = accelerator == "cuda" and rule in ("train", "evaluate")
        assert all(("gpu=1" in line) == wants_gpu for line in lines), (rule, lines)
