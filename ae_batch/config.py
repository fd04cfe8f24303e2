"""Typed study configuration: schema validation with defaults, config merging, protocols, paths.

The schema (``workflow/schemas/config.schema.yaml``) is the single source of keys, types and defaults;
this module fills the defaults (including inside each dataset entry), checks what a schema cannot say
(protocol rules), and gives the stages small typed dataclasses. Nothing here imports torch, so the
Snakefile and the CLI stay fast.

Config files combine as the README says: ``config/config.yaml`` holds the default study; a user config
overrides it key by key (nested mappings merge), except ``datasets`` and ``protocols``, which a user
config replaces wholesale when it defines them ("run exactly these").
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ae_batch.errors import ConfigError

REPO_DIR = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_DIR / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = REPO_DIR / "config" / "config.yaml"
PATH_KEYS = {"events", "subjects", "code_map", "path"}
REPLACED_KEYS = ("datasets", "protocols")  # a user config that defines these runs exactly its own


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
    max_stack: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "auto"
    latent_dim: int = 32
    latent_activation: str = "identity"
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


@dataclass(frozen=True)
class NoiseScaleConfig:
    method: str = "auto"
    max_exact_cost: float = 2e10


@dataclass(frozen=True)
class ProtocolConfig:
    """One protocol as it applies to one dataset: the budget rule and the learning-rate rule.

    ``epochs`` is filled from ``training.max_epochs`` for an epoch budget that names none (the paper's
    protocol keeps meaning "the config's epochs and learning rate").
    """

    name: str
    budget: str
    epochs: int | None = None
    steps: int | None = None
    lr: str = "fixed"
    lr_grid: tuple[float, ...] = ()
    reference_batch_size: int = 32
    validate_every_steps: int | None = None


@dataclass
class StudyConfig:
    study: str
    batch_sizes: list[int]
    seeds: list[int]
    training: TrainingConfig
    model: ModelConfig
    splits: SplitsConfig
    downstream: DownstreamConfig
    noise_scale: NoiseScaleConfig
    mlflow: dict[str, Any]
    datasets: dict[str, dict[str, Any]]
    protocols: dict[str, dict[str, Any]]
    synthetic: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment_name(self) -> str:
        """``ae-batch-<study>`` unless set: never confusable with MLflow's own ``Default``."""
        return self.mlflow.get("experiment_name") or f"ae-batch-{self.study}"

    def model_for(self, dataset: str) -> ModelConfig:
        """The global model keys with the dataset's ``model:`` overrides applied, ``kind`` resolved."""
        entry = self.datasets[dataset]
        merged = {**asdict(self.model), **entry.get("model", {})}
        if merged["kind"] == "auto":
            merged["kind"] = "conv" if entry["kind"] == "mri" else "mlp"
        unknown = set(merged) - set(asdict(self.model))
        if unknown:
            raise ConfigError(
                f"datasets.{dataset}.model: unknown key(s) {sorted(unknown)}"
                f"{_suggestion(sorted(unknown)[0], asdict(self.model))}"
            )
        return ModelConfig.from_dict(merged)

    def protocol_for(self, dataset: str, name: str) -> ProtocolConfig:
        """Protocol ``name`` with the dataset's ``protocols:`` overrides applied."""
        spec = {**self.protocols[name], **self.datasets[dataset].get("protocols", {}).get(name, {})}
        epochs = spec.get("epochs")
        if spec["budget"] == "epochs" and epochs is None:
            epochs = self.training.max_epochs
        return ProtocolConfig(
            name=name,
            budget=spec["budget"],
            epochs=epochs if spec["budget"] == "epochs" else None,
            steps=spec.get("steps") if spec["budget"] == "steps" else None,
            lr=spec.get("lr", "fixed"),
            lr_grid=tuple(float(v) for v in spec.get("lr_grid") or ()),
            reference_batch_size=int(spec.get("reference_batch_size", 32)),
            validate_every_steps=spec.get("validate_every_steps"),
        )


# --- reading and merging ---------------------------------------------------------------------------
def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys, got {type(raw).__name__}")
    return raw


def merge_configs(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: nested mappings merge, other values replace; ``datasets`` and
    ``protocols`` of ``override`` replace the base's wholesale (a user's study runs exactly those)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key in REPLACED_KEYS or not (isinstance(value, dict) and isinstance(out.get(key), dict)):
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _deep_merge(out[key], value)
    return out


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def study_raw_config(user: dict[str, Any] | None = None, user_files: list[str | Path] = ()) -> dict[str, Any]:
    """The default config with the user's files (in order) and mapping merged on top, unvalidated."""
    raw = read_yaml(DEFAULT_CONFIG_PATH)
    for path in user_files:
        raw = merge_configs(raw, read_yaml(path))
    return merge_configs(raw, user or {})


# --- validation -------------------------------------------------------------------------------------
def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _suggestion(key: str, allowed: Any) -> str:
    close = difflib.get_close_matches(key, [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _message(error: Any) -> str:
    """One line naming the key; unknown keys get the closest valid key as a suggestion."""
    where = _key_path(error)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {})
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            prefix = f"{where}." if where != "<top level>" else ""
            return (
                f"config key '{prefix}{extra[0]}' is not a valid key{_suggestion(extra[0], allowed)}; "
                f"valid keys here: {', '.join(sorted(allowed))}"
            )
    return f"config key '{where}': {error.message}"


def validate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``raw`` against the schema and the protocol rules; return a copy with defaults filled.

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
        raise ConfigError(_message(_innermost(errors[0])))
    check_protocols(config)
    return config


def _innermost(error: Any) -> Any:
    """An ``allOf``/``if`` error wraps the real one (e.g. an unknown key inside a dataset entry)."""
    while error.context:
        error = sorted(error.context, key=lambda e: -len(e.absolute_path))[0]
    return error


def check_protocols(config: dict[str, Any]) -> None:
    """What the schema cannot say: a step budget needs ``steps``; ``tuned`` needs a grid of distinct
    positive learning rates; a grid only makes sense with ``tuned``; overrides name known protocols."""
    protocols = config.get("protocols", {})
    for name, spec in protocols.items():
        _check_protocol(f"protocols.{name}", spec)
    for dataset, entry in config.get("datasets", {}).items():
        for name, override in (entry.get("protocols") or {}).items():
            if name not in protocols:
                raise ConfigError(
                    f"config key 'datasets.{dataset}.protocols.{name}': no protocol named '{name}'"
                    f"{_suggestion(name, protocols)}; protocols: {', '.join(protocols)}"
                )
            _check_protocol(f"datasets.{dataset}.protocols.{name}", {**protocols[name], **override})


def _check_protocol(key: str, spec: dict[str, Any]) -> None:
    budget, rule = spec.get("budget"), spec.get("lr", "fixed")
    if budget == "steps" and spec.get("steps") is None:
        raise ConfigError(f"config key '{key}': budget 'steps' needs 'steps' (optimizer steps, ≥ 1)")
    if budget == "epochs" and spec.get("steps") is not None:
        raise ConfigError(f"config key '{key}.steps': only a 'steps' budget takes steps (budget is 'epochs')")
    if budget == "steps" and spec.get("epochs") is not None:
        raise ConfigError(
            f"config key '{key}.epochs': only an 'epochs' budget takes epochs (budget is 'steps')"
        )
    grid = spec.get("lr_grid")
    if rule == "tuned":
        if not grid:
            raise ConfigError(f"config key '{key}': lr 'tuned' needs 'lr_grid', a list of learning rates")
        values = [float(v) for v in grid]
        bad = [v for v in values if not v > 0]
        if bad:
            raise ConfigError(f"config key '{key}.lr_grid': learning rates must be > 0, got {bad}")
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise ConfigError(f"config key '{key}.lr_grid': duplicate learning rate(s) {dup}")
    elif grid is not None:
        raise ConfigError(f"config key '{key}.lr_grid': a grid needs lr 'tuned' (lr is '{rule}')")


# --- paths ------------------------------------------------------------------------------------------
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
    """Validate, fill defaults and make paths absolute (for callers outside the workflow, e.g. tests).

    The workflow keeps paths as written (relative to the working directory), so a moved project folder
    changes no job's settings."""
    return resolve_paths(validate_config(raw), base_dir)


def study_config(config: dict[str, Any]) -> StudyConfig:
    """Typed view of a validated config dict."""
    return StudyConfig(
        study=config["study"],
        batch_sizes=list(config["batch_sizes"]),
        seeds=list(config["seeds"]),
        training=TrainingConfig(**config["training"]),
        model=ModelConfig.from_dict(config["model"]),
        splits=SplitsConfig(**config["splits"]),
        downstream=DownstreamConfig(**config["downstream"]),
        noise_scale=NoiseScaleConfig(**config["noise_scale"]),
        mlflow=dict(config["mlflow"]),
        datasets=dict(config["datasets"]),
        protocols=dict(config["protocols"]),
        synthetic=dict(config.get("synthetic", {})),
    )


def load_config(path: str | Path, base_dir: str | Path = ".") -> dict[str, Any]:
    """One config file on its own, validated, paths absolute."""
    return resolve_config(read_yaml(path), base_dir)


def load_study_config(
    user_files: list[str | Path] = (), user: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a study runs: the default config with the user's files merged on top, validated; paths
    stay as written (relative to the working directory)."""
    return validate_config(study_raw_config(user, user_files))


def check_dataset_paths(
    config: dict[str, Any], synthetic_dir: str | Path, base_dir: str | Path = "."
) -> None:
    """Every dataset path must exist, except those under ``synthetic_dir`` (a rule makes them)."""
    base = Path(base_dir).resolve()
    synthetic = (base / synthetic_dir).resolve()
    for name, entry in config["datasets"].items():
        for key in sorted(PATH_KEYS & set(entry)):
            value = entry[key]
            if value is None:
                continue
            path = (base / Path(value).expanduser()).resolve()
            if path == synthetic or synthetic in path.parents:
                continue
            if not path.exists():
                raise ConfigError(f"config key 'datasets.{name}.{key}': path does not exist: {value}")
