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
    assert config["seeds"] == [0, 1, 2, 3, 4, 5]  # six paired seeds: Wilcoxon can reach p < 0.05
    assert config["protocols"] == {
        "paper": {"budget": "epochs", "lr": "fixed", "reference_batch_size": 32, "validate_every_steps": None}
    }
    assert config["model"]["latent_activation"] == "identity"
    assert config["mlflow"]["experiment_name"] is None and config["training"]["max_stack"] is None
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
        (with_changes(bogus=1), "'bogus'", "not a valid key"),
        (with_changes(training={"max_epoch": 3}), "'training.max_epoch'", "did you mean 'max_epochs'?"),
        (_ehr_with(min_cuont=3), "'datasets.ehr.min_cuont'", "did you mean 'min_count'?"),
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


# --- protocols ---------------------------------------------------------------------------------------
def _with_protocols(**protocols: Any) -> dict[str, Any]:
    return with_changes(protocols=protocols)


@pytest.mark.parametrize(
    ("spec", "key", "detail"),
    [
        ({"budget": "weeks"}, "protocols.p.budget", "weeks"),
        ({"budget": "epochs", "lr": "cubic"}, "protocols.p.lr", "cubic"),
        ({"budget": "steps"}, "protocols.p", "needs 'steps'"),
        ({"budget": "steps", "steps": 0}, "protocols.p.steps", "minimum"),
        ({"budget": "epochs", "lr": "tuned"}, "protocols.p", "needs 'lr_grid'"),
        ({"budget": "epochs", "lr": "tuned", "lr_grid": [0.001, 0.001]}, "protocols.p.lr_grid", "duplicate"),
        ({"budget": "epochs", "lr": "tuned", "lr_grid": [0.001, 0]}, "protocols.p.lr_grid", "0"),
        ({"budget": "epochs", "lr": "tuned", "lr_grid": [-1e-3]}, "protocols.p.lr_grid", "-0.001"),
        ({"budget": "epochs", "lr_grid": [1e-3]}, "protocols.p.lr_grid", "needs lr 'tuned'"),
        ({"budget": "epochs", "steps": 10}, "protocols.p.steps", "only a 'steps' budget"),
        ({"budget": "steps", "steps": 5, "epochs": 2}, "protocols.p.epochs", "only an 'epochs' budget"),
        ({"budget": "epochs", "lr": "sqrt", "reference_batch_size": 0}, "protocols.p.reference_batch_size", "minimum"),
        ({"budget": "steps", "steps": 9, "validate_every": 3}, "protocols.p.validate_every", "validate_every_steps"),
    ],
    ids=["budget", "lr-rule", "steps-missing", "steps-zero", "grid-missing", "grid-duplicate", "grid-zero",
         "grid-negative", "grid-untuned", "steps-with-epochs", "epochs-with-steps", "bad-reference", "typo"],
)  # fmt: skip
def test_bad_protocol_specs_name_the_key(spec: dict[str, Any], key: str, detail: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(_with_protocols(p=spec), tmp_path)
    assert f"'{key}" in str(info.value) and detail in str(info.value)


def test_protocols_apply_per_dataset_with_overrides(tmp_path: Path) -> None:
    raw = _with_protocols(
        paper={"budget": "epochs", "lr": "fixed"},
        equal={"budget": "steps", "steps": 3000, "lr": "sqrt"},
        tuned={"budget": "steps", "steps": 3000, "lr": "tuned", "lr_grid": [3e-4, 1e-3]},
    )
    raw["training"] = {"max_epochs": 12}
    raw["datasets"]["brain"]["protocols"] = {"equal": {"steps": 300}, "tuned": {"steps": 300}}
    study = study_config(resolve_config(raw, tmp_path))
    paper = study.protocol_for("ehr", "paper")
    assert (paper.budget, paper.epochs, paper.steps) == ("epochs", 12, None)  # training.max_epochs
    assert study.protocol_for("ehr", "equal").steps == 3000
    assert study.protocol_for("brain", "equal").steps == 300  # the dataset's override
    tuned = study.protocol_for("brain", "tuned")
    assert (tuned.steps, tuned.lr, tuned.lr_grid, tuned.reference_batch_size) == (
        300,
        "tuned",
        (3e-4, 1e-3),
        32,
    )


def test_override_of_an_unknown_protocol_is_refused(tmp_path: Path) -> None:
    raw = _with_protocols(paper={"budget": "epochs"})
    raw["datasets"]["ehr"]["protocols"] = {"papr": {"epochs": 3}}
    with pytest.raises(ConfigError, match=r"datasets\.ehr\.protocols\.papr.*did you mean 'paper'"):
        resolve_config(raw, tmp_path)


def test_a_user_config_replaces_datasets_and_protocols_but_merges_the_rest() -> None:
    from ae_batch.config import merge_configs

    default = {
        "training": {"max_epochs": 30, "learning_rate": 1e-3},
        "protocols": {"paper": {"budget": "epochs"}, "equal": {"budget": "steps", "steps": 9}},
        "datasets": {"a": {"kind": "tabular", "path": "a.csv"}},
    }
    merged = merge_configs(
        default, {"training": {"max_epochs": 5}, "datasets": {"b": {"kind": "tabular", "path": "b"}}}
    )
    assert merged["training"] == {"max_epochs": 5, "learning_rate": 1e-3}
    assert list(merged["datasets"]) == ["b"]  # exactly the user's datasets
    assert list(merged["protocols"]) == ["paper", "equal"]  # not mentioned: the defaults stay
    only_paper = merge_configs(default, {"protocols": {"paper": {"budget": "epochs"}}})
    assert list(only_paper["protocols"]) == ["paper"]  # how to turn the controlled protocols off


def test_the_default_study_runs_paper_and_a_controlled_protocol_with_six_seeds() -> None:
    from ae_batch.config import load_study_config

    study = study_config(load_study_config())
    assert "paper" in study.protocols and len(study.protocols) >= 2
    assert len(study.seeds) >= 6
    for name in study.datasets:
        assert study.protocol_for(name, "paper").budget == "epochs"


def test_an_old_config_without_protocols_keeps_its_meaning(tmp_path: Path) -> None:
    """No `protocols` key: the paper protocol is the config's own epochs and learning rate."""
    study = study_config(
        resolve_config(with_changes(training={"max_epochs": 7, "learning_rate": 0.01}), tmp_path)
    )
    paper = study.protocol_for("ehr", "paper")
    assert (paper.budget, paper.epochs, paper.lr) == ("epochs", 7, "fixed")
    from ae_batch.training.protocols import learning_rates

    assert learning_rates(paper, study.training.learning_rate, 64) == [0.01]
