"""The three protocols of config/examples/confounds.yaml on a user's own table, and stacking that
changes no result: the same study trained with one member per job (``training.max_stack: 1``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake_helpers import REPO, TINY_EHR_STUDY, run_snakemake, write_config

from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort
from ae_batch.stages.aggregate import TIMING_COLUMNS


@pytest.mark.slow
def test_the_confounds_example_runs_on_a_users_own_table(tmp_path: Path) -> None:
    example = yaml.safe_load((REPO / "config/examples/confounds.yaml").read_text())
    assert set(example["protocols"]) == {"paper", "equal_steps", "tuned"}
    synthesize_ehr_cohort(tmp_path / "src", n_subjects=150, n_phenotypes=20, seed=5)
    (tmp_path / "mine").mkdir()
    (tmp_path / "src/tabular.csv").rename(tmp_path / "mine/table.csv")
    config = {
        **example,  # the example's three protocols, shrunk to test size below
        "batch_sizes": [2, 16],
        "seeds": [0, 1],
        "model": {"hidden_dims": [16], "latent_dim": 4},
        "downstream": {"folds": 3, "repeats": 1},
        "datasets": {"my_table": {**example["datasets"]["my_table"], "path": "mine/table.csv"}},
    }
    config["protocols"]["paper"]["epochs"] = 2
    for name in ("equal_steps", "tuned"):
        config["protocols"][name]["steps"] = 20
    config["protocols"]["tuned"]["lr_grid"] = [0.0003, 0.003]
    result = run_snakemake(tmp_path, write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "results/confounds/summary.csv")
    assert set(summary["protocol"]) == {"paper", "equal_steps", "tuned"}  # exactly these: no default ones
    assert set(summary["dataset"]) == {"my_table"}
    tuned = summary[summary["protocol"] == "tuned"]
    assert len(tuned) == 2 * 2 * 2  # batch sizes × seeds × learning rates
    for (_, _), cell in tuned.groupby(["batch_size", "seed"]):
        assert cell["lr_selected"].astype(str).str.lower().value_counts().to_dict() == {"true": 1, "false": 1}
        chosen = cell[cell["lr_selected"].astype(str).str.lower() == "true"].iloc[0]
        assert chosen["val_recon_loss"] == cell["val_recon_loss"].min()  # selected by validation loss only
        assert not math.isnan(chosen["sex_auroc_mean"])  # probes run on the selected member
        other = cell[cell["lr_selected"].astype(str).str.lower() == "false"].iloc[0]
        assert math.isnan(other["sex_auroc_mean"]) and not math.isnan(other["test_recon_loss"])
    stats = pd.read_csv(tmp_path / "results/confounds/stats.csv")
    assert set(stats["protocol"]) == {"paper", "equal_steps", "tuned"}
    comparison = pd.read_csv(tmp_path / "results/confounds/verdict_vs_paper.csv")
    assert set(comparison["protocol"]) == {"equal_steps", "tuned"}
    assert set(comparison["reading"]) <= {"survives", "vanishes", "reverses", "appears", "no effect"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ae-batch-confounds")
    children = [
        r
        for r in client.search_runs([exp.experiment_id], max_results=500)
        if r.data.tags.get("ae_batch.level") == "grid_point"
    ]
    assert len(children) == len(summary)  # every learning rate of the grid stays visible
    assert {r.data.tags["lr_selected"] for r in children if r.data.params["protocol"] == "tuned"} == {
        "true",
        "false",
    }


@pytest.mark.slow
def test_stacking_changes_no_result(ehr_study: Path, tmp_path: Path) -> None:
    """The tiny study's equal-step protocol again, every member trained alone: the metrics agree with the
    stacked run's within the equivalence tolerance; only the timing columns and the groups differ."""
    protocols = {"steps": TINY_EHR_STUDY["protocols"]["steps"]}  # one protocol keeps the test short
    config = {
        **TINY_EHR_STUDY,
        "protocols": protocols,
        "training": {**TINY_EHR_STUDY["training"], "max_stack": 1},
    }
    result = run_snakemake(tmp_path, write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr[-3000:]
    alone = pd.read_csv(tmp_path / "results/tiny/summary.csv")
    stacked = pd.read_csv(ehr_study / "results/tiny/summary.csv")
    stacked = stacked[stacked["protocol"] == "steps"].reset_index(drop=True)
    assert len(alone) == len(stacked) == 4
    assert (
        alone["train_group"].nunique() == len(alone) and stacked["train_group"].nunique() == len(stacked) // 2
    )
    keep = [c for c in stacked.columns if c not in TIMING_COLUMNS]
    numeric = [c for c in keep if pd.api.types.is_float_dtype(stacked[c])]
    pd.testing.assert_frame_equal(
        alone[[c for c in keep if c not in numeric]], stacked[[c for c in keep if c not in numeric]]
    )
    for col in numeric:
        a, b = alone[col].to_numpy(float), stacked[col].to_numpy(float)
        tol = 1e-6 if col.endswith("recon_loss") else 1e-4
        assert np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True), col
