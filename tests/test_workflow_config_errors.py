"""A bad config stops `snakemake` before any job starts, with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake_helpers import TINY_ICD, run_snakemake


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"trainig": {"max_epochs": 3}}, "'trainig' is not a valid key (did you mean 'training'?)"),
        ({"batch_sizes": [4, 4]}, "batch_sizes"),
        ({"batch_sizes": []}, "batch_sizes"),
        ({"training": {"learning_rate": 0}}, "training.learning_rate"),
        ({"datasets": {"mine": {"kind": "tabular", "path": "missing/ehr.csv"}}}, "datasets.mine.path"),
    ],
    ids=["unknown-key", "duplicate-batch-sizes", "empty-batch-sizes", "non-positive-lr", "missing-path"],
)
def test_bad_config_fails_before_any_job(tmp_path: Path, change: dict, expected: str) -> None:
    config = {"study": "bad", "batch_sizes": [2, 4], "datasets": {"icd": TINY_ICD}, **change}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "bad.yaml", "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert expected in output, output[-2000:]
    assert not (tmp_path / "results").exists()  # nothing ran
