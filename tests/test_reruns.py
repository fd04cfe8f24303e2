"""The researcher's loop: a changed setting reruns exactly the jobs it affects, shown by the dry run
(``snakemake -n``) and, where training happens, by the files and MLflow runs left untouched."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from snakemake_helpers import TINY_EHR_STUDY, planned_jobs, run_snakemake, write_config

from ae_batch.io import read_json

DOWNSTREAM = {"evaluate", "baselines", "track", "aggregate", "figures", "publish", "all"}


def _copy(study: Path, dest: Path) -> Path:
    shutil.copytree(study, dest, symlinks=True)  # copy2: mtimes kept
    return dest


def _dry_run(work: Path, **changes: Any) -> dict[str, list[str]]:
    config = copy.deepcopy(TINY_EHR_STUDY)
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    result = run_snakemake(work, write_config(work, config, "changed.yaml"), "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    return planned_jobs(result)


def _members_of(work: Path, train_outputs: list[str]) -> set[tuple[str, int, str]]:
    out = set()
    for manifest in train_outputs:
        spec = read_json(work / manifest.replace(".train.json", ".spec.json"))
        out |= {(spec["protocol"]["name"], spec["batch_size"], m["name"]) for m in spec["members"]}
    return out


@pytest.mark.slow
def test_downstream_change_reruns_evaluation_only(ehr_study: Path) -> None:
    jobs = _dry_run(ehr_study, downstream={"repeats": 2})
    assert set(jobs) == DOWNSTREAM and len(jobs["evaluate"]) == 4  # no train job


@pytest.mark.slow
def test_tracking_uri_change_reruns_no_training_and_no_evaluation(ehr_study: Path) -> None:
    jobs = _dry_run(ehr_study, mlflow={"tracking_uri": "sqlite:///other.db"})
    assert set(jobs) == {"track", "aggregate", "figures", "publish", "all"}


@pytest.mark.slow
def test_training_or_model_change_retrains_everything(ehr_study: Path) -> None:
    for change in ({"training": {"max_epochs": 4}}, {"model": {"latent_dim": 3}}):
        jobs = _dry_run(ehr_study, **change)
        members = _members_of(ehr_study, jobs.get("train", []))
        expected = 2 if "training" in change else 4  # max_epochs: the paper protocol's 2 cells; model: all 4
        assert len(jobs["train"]) == expected, change  # one group (job) per cell, both seeds in it
        assert len(members) == 2 * expected


@pytest.mark.slow
def test_new_batch_size_or_protocol_trains_only_that(ehr_study: Path) -> None:
    jobs = _dry_run(ehr_study, batch_sizes=[2, 16, 8])
    assert {b for _, b, _ in _members_of(ehr_study, jobs["train"])} == {8}
    protocols = {**TINY_EHR_STUDY["protocols"], "linear": {"budget": "epochs", "epochs": 2, "lr": "linear"}}
    jobs = _dry_run(ehr_study, protocols=protocols)
    assert {p for p, _, _ in _members_of(ehr_study, jobs["train"])} == {"linear"}


@pytest.mark.slow
def test_a_copied_study_folder_has_nothing_to_do(ehr_study: Path, tmp_path: Path) -> None:
    moved = _copy(ehr_study, tmp_path / "elsewhere" / "renamed")
    result = run_snakemake(moved, "study.yaml", "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_adding_a_seed_trains_only_the_new_seed(ehr_study: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    work = _copy(ehr_study, tmp_path / "work")
    models = sorted(work.glob("results/tiny/icd/*/bs*/seed*/model.pt"))
    before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in models}
    evals = {p: p.read_bytes() for p in work.glob("results/tiny/icd/*/bs*/seed*/eval.json")}
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ae-batch-tiny")
    runs_before = {r.info.run_id: (r.info.end_time, r.data.metrics) for r in client.search_runs([exp.experiment_id])
                   if r.data.tags.get("ae_batch.level") == "grid_point"}  # fmt: skip
    config = {**TINY_EHR_STUDY, "seeds": [0, 1, 2]}
    jobs = planned_jobs(run_snakemake(work, write_config(work, config, "more.yaml"), "-n"))
    assert {m for _, _, m in _members_of(work, jobs["train"])} == {"seed2"}
    result = run_snakemake(work, "more.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    for path, (data, mtime) in before.items():  # existing members: bytes and mtime untouched
        assert path.read_bytes() == data and os.stat(path).st_mtime_ns == mtime, path
    assert all(p.read_bytes() == data for p, data in evals.items())
    runs_after = {r.info.run_id: (r.info.end_time, r.data.metrics) for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get("ae_batch.level") == "grid_point"}  # fmt: skip
    assert all(runs_after[k] == v for k, v in runs_before.items())  # the same runs, unchanged
    assert len(runs_after) == len(runs_before) + 4  # seed 2 at 2 batch sizes × 2 protocols
    summary = pd.read_csv(work / "results/tiny/summary.csv")
    assert sorted(summary["seed"].unique()) == [0, 1, 2] and len(summary) == 12
