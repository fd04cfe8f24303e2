"""Subject ids reach MLflow only as salted hashes unless the config asks for raw ids."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ae_batch.stages.track import per_subject_for_tracking
from ae_batch.stages.tracking_init import init_tracking

TABLE = pd.DataFrame(
    {"subject_id": ["BraTS2021_00000", "BraTS2021_00001"], "split": "test", "recon_loss": [0.1, 0.2]}
)


def test_default_is_salted_hashes(tmp_path: Path) -> None:
    salt = tmp_path / "salt"
    salt.write_text("abc\n")
    shared = per_subject_for_tracking(TABLE, {"log_raw": False, "salt_file": str(salt)})
    assert "subject_id" not in shared.columns
    assert not set(TABLE["subject_id"]) & set(shared["subject_hash"])
    assert shared["subject_hash"].str.len().eq(16).all() and shared["subject_hash"].is_unique
    assert shared["recon_loss"].tolist() == [0.1, 0.2]
    # Stable for one salt, different for another: linkable locally, not across studies.
    again = per_subject_for_tracking(TABLE, {"salt_file": str(salt)})
    assert again["subject_hash"].tolist() == shared["subject_hash"].tolist()
    salt.write_text("xyz\n")
    other = per_subject_for_tracking(TABLE, {"salt_file": str(salt)})
    assert not set(other["subject_hash"]) & set(shared["subject_hash"])


def test_raw_ids_only_when_asked_and_nothing_without_a_salt(tmp_path: Path) -> None:
    assert (
        per_subject_for_tracking(TABLE, {"log_raw": True})["subject_id"].tolist()
        == TABLE["subject_id"].tolist()
    )
    assert per_subject_for_tracking(TABLE, {"salt_file": str(tmp_path / "missing")}) is None
    assert per_subject_for_tracking(TABLE, {}) is None


def test_tracking_init_makes_one_random_salt_and_keeps_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    salt = tmp_path / "results" / ".subject_id_salt"
    init_tracking(uri, "ae-batch-s", "s", ["d"], tmp_path, salt)
    first = salt.read_text()
    assert len(first.strip()) == 32
    init_tracking(uri, "ae-batch-s", "s", ["d"], tmp_path, salt)
    assert salt.read_text() == first
