"""What a user sees first: a bad input stops the study before any job, its message within the first 10
lines, naming the file, column, subject, CSV line and value; a warning for a latent as wide as the input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from snakemake_helpers import run_snakemake, write_config

from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort


def _table(tmp_path: Path) -> pd.DataFrame:
    synthesize_ehr_cohort(tmp_path / "src", n_subjects=120, n_phenotypes=20, seed=5)
    return pd.read_csv(tmp_path / "src/tabular.csv", dtype={"subject_id": str})


def _study(tmp_path: Path, table: pd.DataFrame, **entry: object) -> list[str]:
    (tmp_path / "data").mkdir(exist_ok=True)
    table.to_csv(tmp_path / "data/ehr.csv", index=False)
    config = {"study": "bad", "batch_sizes": [2, 8], "seeds": [0],
              "datasets": {"mine": {"kind": "tabular", "path": "data/ehr.csv", **entry}}}  # fmt: skip
    result = run_snakemake(tmp_path, write_config(tmp_path, config), "-n")
    assert result.returncode != 0
    assert not (tmp_path / "results/bad/mine").exists()  # no job ran
    return (result.stdout + result.stderr).splitlines()


def _first_lines(lines: list[str], *needles: str) -> None:
    head = "\n".join(lines[:10])
    for needle in needles:
        assert needle in head, f"{needle!r} not in the first 10 lines:\n{head}"


@pytest.mark.slow
def test_text_in_a_numeric_column(tmp_path: Path) -> None:
    table = _table(tmp_path)
    table["bmi"] = table["bmi"].astype(object)
    table.loc[99, "bmi"] = "<0.5"  # pandas row 99 = CSV line 101
    sid = table.loc[99, "subject_id"]
    _first_lines(_study(tmp_path, table), "data/ehr.csv", "'bmi'", f"subject {sid}", "line 101", "'<0.5'")


@pytest.mark.slow
def test_a_third_sex_value(tmp_path: Path) -> None:
    table = _table(tmp_path)
    table.loc[7, "sex"] = "X"
    _first_lines(
        _study(tmp_path, table),
        "data/ehr.csv",
        "'sex'",
        f"subject {table.loc[7, 'subject_id']}",
        "line 9",
        "'X'",
    )


@pytest.mark.slow
def test_duplicate_ids(tmp_path: Path) -> None:
    table = _table(tmp_path)
    table.loc[10, "subject_id"] = table.loc[3, "subject_id"]
    _first_lines(_study(tmp_path, table), "data/ehr.csv", table.loc[3, "subject_id"], "lines 5 and 12")


@pytest.mark.slow
def test_a_missing_column_with_a_suggestion(tmp_path: Path) -> None:
    table = _table(tmp_path).rename(columns={"sex": "Sex"})
    _first_lines(_study(tmp_path, table), "data/ehr.csv", "'sex'", "did you mean 'Sex'?")


@pytest.mark.slow
def test_a_column_named_in_the_config_but_absent(tmp_path: Path) -> None:
    _first_lines(
        _study(tmp_path, _table(tmp_path), drop_columns=["bmii"]),
        "data/ehr.csv",
        "'bmii'",
        "did you mean 'bmi'?",
    )


@pytest.mark.slow
def test_a_latent_as_wide_as_the_input_is_warned_about(tmp_path: Path) -> None:
    table = _table(tmp_path)[["subject_id", "sex", "age", "bmi", "sbp"]]
    (tmp_path / "data").mkdir()
    table.to_csv(tmp_path / "data/ehr.csv", index=False)
    config = {"study": "w", "batch_sizes": [2], "seeds": [0], "model": {"latent_dim": 8},
              "datasets": {"mine": {"kind": "tabular", "path": "data/ehr.csv"}}}  # fmt: skip
    result = run_snakemake(tmp_path, write_config(tmp_path, config), "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.latent_dim 8 >= its 3 input features" in result.stdout + result.stderr
