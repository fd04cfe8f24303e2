"""Typed study configuration: validation against the JSON schema, defaults, resolved paths.

The schema (``workflow/schemas/config.schema.yaml``) is the single source of keys, types and defaults;
this module fills the defaults (including inside each dataset entry), turns relative paths into absolute
ones against the working directory, and gives the stages small typed dataclasses.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ae_batch.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
PATH_KEYS = {"events", "subjects", "code_map", "path"}


@dataclass(frozen=True)
class TrainingConfig:
    max_epochs: int = 30
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    loss: str = "mse"
    accelerator: str = "auto"
    threads: int = 1
    eval_batch_size: int = 256


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "auto"
    latent_dim: int = 32
    hidden_dims: tuple[int, ...] = (256, 128)
    conv_channels: tuple[int, ...] = (8, 16, 32)
    codebook_size: int = 64
    embedding_dim: int = 16

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        for key in ("hidden_dims", "conv_channels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class DownstreamConfig:
    folds: int = 5
    repeats: int = 3
    seed: int = 0
    C: float = 1.0


@dataclass(frozen=True)
class SplitsConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    seed: int = 2023


@dataclass
class StudyConfig:
    study: str
    batch_sizes: list[int]
    seeds: list[int]
    training: TrainingConfig
    model: ModelConfig
    splits: SplitsConfig
    downstream: DownstreamConfig
    mlflow: dict[str, Any]
    datasets: dict[str, dict[str, Any]]
    synthetic: dict[str, Any] = field(default_factory=dict)

    def model_for(self, dataset: str) -> ModelConfig:
        """The global model keys with the dataset's ``model:`` overrides applied, ``kind`` resolved."""
        entry = self.datasets[dataset]
        merged = {**asdict(self.model), **entry.get("model", {})}
        if merged["kind"] == "auto":
            merged["kind"] = "conv" if entry["kind"] == "mri" else "mlp"
        unknown = set(merged) - set(asdict(self.model))
        if unknown:
            raise ConfigError(f"datasets.{dataset}.model: unknown keys {sorted(unknown)}")
        return ModelConfig.from_dict(merged)


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``raw`` against the schema and return a copy with every default filled in.

    Raises ConfigError naming the key path of the first problem.
    """
    import jsonschema

    config = copy.deepcopy(raw) if raw is not None else {}
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys, got {type(raw).__name__}")
    schema = load_schema()
    base = jsonschema.Draft202012Validator

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    filling = jsonschema.validators.extend(base, {"properties": set_defaults})
    # Two passes: the first fills defaults (so nested objects exist), the second reports errors on the result.
    list(filling(schema).iter_errors(config))
    errors = sorted(
        base(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path))
    )
    if errors:
        e = errors[0]
        raise ConfigError(f"config key '{_key_path(e)}': {e.message}")
    return config


def resolve_paths(config: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """Make dataset paths and the sqlite tracking URI absolute against ``base_dir`` (the working dir)."""
    base = Path(base_dir).resolve()
    out = copy.deepcopy(config)
    for entry in out.get("datasets", {}).values():
        for key in PATH_KEYS & set(entry):
            if entry[key] is not None:
                entry[key] = str((base / Path(entry[key]).expanduser()).resolve())
    out.setdefault("mlflow", {})["tracking_uri"] = resolve_tracking_uri(
        out.get("mlflow", {}).get("tracking_uri", "sqlite:///mlflow.db"), base
    )
    return out


def resolve_tracking_uri(uri: str, base_dir: str | Path) -> str:
    """``sqlite:///mlflow.db`` (relative) → ``sqlite:////abs/path/mlflow.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(base_dir) / uri[len(prefix) :]).resolve())
    return uri


def resolve_config(raw: dict[str, Any], base_dir: str | Path = ".") -> dict[str, Any]:
    """Validate (the schema also refuses duplicate batch sizes), fill defaults and resolve paths.

    The Snakefile calls this once, before any job."""
    return resolve_paths(validate_config(raw), base_dir)


def study_config(config: dict[str, Any]) -> StudyConfig:
    """Typed view of a resolved config dict."""
    return StudyConfig(
        study=config["study"],
        batch_sizes=list(config["batch_sizes"]),
        seeds=list(config["seeds"]),
        training=TrainingConfig(**config["training"]),
        model=ModelConfig.from_dict(config["model"]),
        splits=SplitsConfig(**config["splits"]),
        downstream=DownstreamConfig(**config["downstream"]),
        mlflow=dict(config["mlflow"]),
        datasets=dict(config["datasets"]),
        synthetic=dict(config.get("synthetic", {})),
    )


def load_config(path: str | Path, base_dir: str | Path = ".") -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return resolve_config(raw or {}, base_dir)


def check_dataset_paths(config: dict[str, Any], synthetic_dir: str | Path) -> None:
    """Every dataset path must exist, except those under ``synthetic_dir`` (a rule makes them)."""
    synthetic = Path(synthetic_dir).resolve()
    for name, entry in config["datasets"].items():
        for key in sorted(PATH_KEYS & set(entry)):
            value = entry[key]
            if value is None:
                continue
            path = Path(value)
            if path == synthetic or synthetic in path.parents:
                continue
            if not path.exists():
                raise ConfigError(f"config key 'datasets.{name}.{key}': path does not exist: {path}")
