"""Config validation: defaults, errors that name the key path, path resolution, typed views."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ae_batch.config import (
    ModelConfig,
    check_dataset_paths,
    load_config,
    resolve_config,
    resolve_tracking_uri,
    study_config,
)
from ae_batch.errors import ConfigError

MINIMAL: dict[str, Any] = {
    "batch_sizes": [1, 4],
    "datasets": {
        "ehr": {"kind": "events", "events": "e.csv", "subjects": "s.csv", "code_map": "m.csv"},
        "tab": {"kind": "tabular", "path": "data/t.csv"},
        "brain": {"kind": "mri", "path": "data/brats"},
    },
}


def with_changes(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(MINIMAL)
    raw.update(changes)
    return raw


def test_defaults_are_filled(tmp_path: Path) -> None:
    config = resolve_config(copy.deepcopy(MINIMAL), tmp_path)
    assert config["study"] == "default"
    assert config["seeds"] == [0, 1, 2]
    assert config["training"]["max_epochs"] == 30
    assert config["training"]["learning_rate"] == pytest.approx(1e-3)
    assert config["training"]["optimizer"] == "adam"
    assert config["training"]["loss"] == "mse"
    assert config["model"]["latent_dim"] == 32
    assert config["model"]["hidden_dims"] == [256, 128]
    assert config["model"]["kind"] == "auto"
    assert config["splits"] == {"val_fraction": 0.15, "test_fraction": 0.25, "seed": 2023}
    assert config["downstream"]["folds"] == 5 and config["downstream"]["repeats"] == 3
    ehr = config["datasets"]["ehr"]
    assert ehr["min_count"] == 5
    assert ehr["keep_sex_restricted"] is False
    assert ehr["id_column"] == "subject_id" and ehr["sex_column"] == "sex"
    assert ehr["map_code_column"] == "ICD9" and ehr["map_phenotype_column"] == "PheCode"
    tab = config["datasets"]["tab"]
    assert tab["categorical_columns"] == [] and tab["drop_columns"] == []
    assert "min_count" not in tab  # events defaults do not leak into other kinds
    assert config["datasets"]["brain"]["layout"] == "auto"
    assert config["datasets"]["brain"]["spatial_size"] == [32, 32, 32]


def test_resolve_does_not_mutate_input(tmp_path: Path) -> None:
    raw = copy.deepcopy(MINIMAL)
    resolve_config(raw, tmp_path)
    assert raw == MINIMAL


def test_user_values_win_over_defaults(tmp_path: Path) -> None:
    raw = with_changes(training={"max_epochs": 3, "learning_rate": 0.01}, model={"latent_dim": 8})
    raw["datasets"]["ehr"]["min_count"] = 2
    config = resolve_config(raw, tmp_path)
    assert config["training"]["max_epochs"] == 3
    assert config["training"]["learning_rate"] == 0.01
    assert config["training"]["optimizer"] == "adam"  # the rest still defaulted
    assert config["model"]["latent_dim"] == 8
    assert config["datasets"]["ehr"]["min_count"] == 2


def _ehr_with(**extra: Any) -> dict[str, Any]:
    raw = copy.deepcopy(MINIMAL)
    raw["datasets"]["ehr"].update(extra)
    return raw


@pytest.mark.parametrize(
    ("raw", "key_path", "detail"),
    [
        (with_changes(bogus=1), "<top level>", "bogus"),
        (with_changes(training={"max_epoch": 3}), "'training'", "max_epoch"),
        (_ehr_with(min_cuont=3), "'datasets.ehr'", "min_cuont"),
        (with_changes(batch_sizes="abc"), "'batch_sizes'", "not of type 'array'"),
        (with_changes(batch_sizes=[4, 0]), "'batch_sizes.1'", "minimum"),
        (with_changes(batch_sizes=[]), "'batch_sizes'", "non-empty"),
        (with_changes(batch_sizes=[4, 8, 4]), "'batch_sizes'", "non-unique"),
        (with_changes(training={"learning_rate": 0}), "'training.learning_rate'", "0"),
        (with_changes(training={"max_epochs": 2.5}), "'training.max_epochs'", "integer"),
        (with_changes(model={"latent_dim": -1}), "'model.latent_dim'", "minimum"),
        (_ehr_with(min_count=0), "'datasets.ehr.min_count'", "minimum"),
        (_ehr_with(kind="claims"), "'datasets.ehr.kind'", "claims"),
        (with_changes(datasets={"t": {"kind": "tabular"}}), "'datasets.t'", "'path' is a required"),
        (with_changes(datasets={}), "'datasets'", ""),
        ({"datasets": MINIMAL["datasets"]}, "<top level>", "batch_sizes"),
    ],
    ids=[
        "unknown-top-level",
        "unknown-training-key",
        "unknown-dataset-key",
        "wrong-type",
        "batch-size-zero",
        "empty-batch-sizes",
        "duplicate-batch-sizes",
        "learning-rate-zero",
        "float-epochs",
        "negative-latent",
        "min-count-zero",
        "unknown-kind",
        "missing-required-path",
        "no-datasets",
        "missing-batch-sizes",
    ],
)
def test_invalid_config_names_the_key(
    raw: dict[str, Any], key_path: str, detail: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(raw, tmp_path)
    message = str(info.value)
    assert key_path in message
    assert detail in message


def test_relative_paths_and_sqlite_uri_become_absolute(tmp_path: Path) -> None:
    config = resolve_config(copy.deepcopy(MINIMAL), tmp_path)
    base = tmp_path.resolve()
    assert config["datasets"]["ehr"]["events"] == str(base / "e.csv")
    assert config["datasets"]["ehr"]["code_map"] == str(base / "m.csv")
    assert config["datasets"]["tab"]["path"] == str(base / "data" / "t.csv")
    assert config["datasets"]["brain"]["path"] == str(base / "data" / "brats")
    assert config["datasets"]["brain"]["subjects"] is None  # optional path left alone
    assert config["mlflow"]["tracking_uri"] == f"sqlite:///{base / 'mlflow.db'}"
    assert config["mlflow"]["tracking_uri"].startswith("sqlite:////")


def test_absolute_paths_and_other_uris_unchanged(tmp_path: Path) -> None:
    raw = with_changes(mlflow={"tracking_uri": "http://localhost:5000"})
    raw["datasets"]["tab"]["path"] = "/abs/t.csv"
    config = resolve_config(raw, tmp_path)
    assert config["datasets"]["tab"]["path"] == "/abs/t.csv"
    assert config["mlflow"]["tracking_uri"] == "http://localhost:5000"
    assert resolve_tracking_uri("sqlite:////x/m.db", tmp_path) == "sqlite:////x/m.db"
    assert resolve_tracking_uri("sqlite:///sub/m.db", "/base") == "sqlite:////base/sub/m.db"


def test_load_config_reads_yaml_and_reports_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("batch_sizes: [2]\ndatasets:\n  t: {kind: tabular, path: t.csv}\n")
    config = load_config(path, tmp_path)
    assert config["batch_sizes"] == [2]
    assert config["datasets"]["t"]["path"] == str(tmp_path.resolve() / "t.csv")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", tmp_path)
    (tmp_path / "bad.yaml").write_text("batch_sizes: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml", tmp_path)


def test_check_dataset_paths_names_the_missing_key(tmp_path: Path) -> None:
    for name in ("e.csv", "m.csv"):
        (tmp_path / name).write_text("x\n")
    raw = {"batch_sizes": [1], "datasets": copy.deepcopy({"ehr": MINIMAL["datasets"]["ehr"]})}
    config = resolve_config(raw, tmp_path)
    with pytest.raises(ConfigError) as info:
        check_dataset_paths(config, tmp_path / "data_synthetic")
    assert "datasets.ehr.subjects" in str(info.value)
    assert str(tmp_path.resolve() / "s.csv") in str(info.value)
    (tmp_path / "s.csv").write_text("x\n")
    check_dataset_paths(config, tmp_path / "data_synthetic")  # all present: no error


def test_check_dataset_paths_skips_the_synthetic_dir(tmp_path: Path) -> None:
    raw = {
        "batch_sizes": [1],
        "datasets": {
            "ehr": {
                "kind": "events",
                "events": "data_synthetic/ehr/events.csv",
                "subjects": "data_synthetic/ehr/subjects.csv",
                "code_map": "data_synthetic/ehr/code_map.csv",
            }
        },
    }
    config = resolve_config(raw, tmp_path)
    check_dataset_paths(config, tmp_path / "data_synthetic")  # nothing exists, but a rule makes them
    with pytest.raises(ConfigError, match="datasets.ehr.code_map"):
        check_dataset_paths(config, tmp_path / "elsewhere")


def test_study_config_model_for_resolves_kind_and_overrides(tmp_path: Path) -> None:
    raw = copy.deepcopy(MINIMAL)
    raw["model"] = {"latent_dim": 16, "hidden_dims": [64, 32]}
    raw["datasets"]["tab"]["model"] = {"latent_dim": 4, "hidden_dims": [8]}
    raw["datasets"]["brain"]["model"] = {"kind": "vqvae"}
    study = study_config(resolve_config(raw, tmp_path))
    assert study.batch_sizes == [1, 4]
    assert study.training.max_epochs == 30
    ehr = study.model_for("ehr")
    assert ehr == ModelConfig(kind="mlp", latent_dim=16, hidden_dims=(64, 32))
    tab = study.model_for("tab")
    assert (tab.kind, tab.latent_dim, tab.hidden_dims) == ("mlp", 4, (8,))
    assert study.model_for("brain").kind == "vqvae"
    raw["datasets"]["brain"]["model"] = {}
    study = study_config(resolve_config(raw, tmp_path))
    assert study.model_for("brain").kind == "conv"
    assert study.model_for("brain").latent_dim == 16  # the global value when not overridden


def test_model_override_with_unknown_key_is_rejected(tmp_path: Path) -> None:
    raw = copy.deepcopy(MINIMAL)
    raw["datasets"]["tab"]["model"] = {"latent_dimm": 4}
    study = study_config(resolve_config(raw, tmp_path))
    with pytest.raises(ConfigError, match=r"datasets\.tab\.model.*latent_dimm"):
        study.model_for("tab")
