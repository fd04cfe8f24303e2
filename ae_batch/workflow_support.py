"""What the Snakefile needs at DAG-build time, as plain functions (no torch, no MLflow).

Kept out of the rule files so they hold no logic: the settings files jobs read, the CPU claim of a job,
the refusals that must come before any job is submitted, and the fast data check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ae_batch.config import StudyConfig
from ae_batch.errors import ConfigError
from ae_batch.grid import digest
from ae_batch.io import write_json

SERVER_RECIPE = "README.md, section 'MLflow on a tracking server'"


def settings_file(results: str, kind: str, settings: dict[str, Any]) -> str:
    """``<results>/.settings/<kind>-<hash>.json``: written once, never changed (its name is its content's
    hash), so a job's command stays short, a running job never sees another run's settings, and a
    rule's params (this path) change exactly when its settings do."""
    path = Path(results) / ".settings" / f"{kind}-{digest(settings, 12)}.json"
    if not path.exists():
        write_json(path, settings)
    return str(path)


def cpu_claim(workflow: Any, threads: int) -> int:
    """Cores a local job claims: its ``threads``, scaled up when ``--cores`` exceeds this machine's
    CPUs so that no more jobs run at once than the CPUs serve (``workflow.cores`` is Snakemake's
    documented way to read ``--cores``; it is undefined without one, e.g. on a cluster)."""
    try:
        cores = workflow.cores
    except Exception:  # noqa: BLE001 - WorkflowError: no --cores given
        return threads
    cpus = os.cpu_count() or 1
    if isinstance(cores, int) and cores > cpus:
        return max(threads, -(-cores * threads // cpus))
    return threads


def is_local_execution(workflow: Any) -> bool:
    """Whether jobs run on this machine. Snakemake has no documented accessor for the executor; this
    reads ``workflow.local_exec`` (tests/test_project.py fails loudly if Snakemake changes it). It is
    meaningful only once the executor is set up, i.e. in ``onstart``, not while the Snakefile is parsed."""
    return bool(workflow.local_exec)


def check_executor(workflow: Any, tracking_uri: str) -> None:
    """Refuse an sqlite tracking store when jobs run elsewhere (a cluster): called from ``onstart``, so
    before any job is submitted (a dry run is never refused: it runs no ``onstart``)."""
    if tracking_uri.startswith("sqlite:") and not is_local_execution(workflow):
        raise ConfigError(
            f"mlflow.tracking_uri is an sqlite file ({tracking_uri}) but jobs run on a cluster executor: "
            "sqlite on a shared (network) filesystem corrupts under concurrent writers from several "
            f"nodes. Start an MLflow tracking server and set mlflow.tracking_uri: http://host:port (see "
            f"{SERVER_RECIPE})"
        )


def check_datasets(study: StudyConfig, results: str, synthetic_dir: str) -> list[dict[str, Any]]:
    """The fast data check of every dataset (cached while its files are unchanged), before any job.

    Datasets the workflow synthesizes itself are skipped until their files exist. Prints a warning when
    the latent is as wide as the input (the autoencoder can then copy its input)."""
    from ae_batch.data.checks import check_dataset_cached

    synthetic = Path(synthetic_dir).resolve()
    summaries = []
    for name in sorted(study.datasets):
        entry = study.datasets[name]
        paths = [Path(entry[k]).resolve() for k in ("events", "subjects", "code_map", "path") if entry.get(k)]
        generated = any(p == synthetic or synthetic in p.parents for p in paths)
        if generated and not all(p.exists() for p in paths):
            continue
        summary = {"name": name, **check_dataset_cached(name, entry, study.splits, Path(results) / ".checks")}
        summaries.append(summary)
        n_train = (summary.get("n_per_split") or {}).get("train")
        too_big = [b for b in study.batch_sizes if n_train is not None and b > n_train]
        if too_big:
            raise ConfigError(
                f"config key 'batch_sizes': {too_big} larger than the {n_train} training subjects of dataset "
                f"'{name}' (a minibatch cannot exceed the training split); remove them"
            )
        n_features = summary.get("n_features")
        latent = study.model_for(name).latent_dim
        if n_features and latent >= n_features:
            print(
                f"warning: dataset '{name}': model.latent_dim {latent} >= its {n_features} input features: "
                "the autoencoder can copy its input, so its latents say little; lower model.latent_dim",
                file=sys.stderr,
            )
    return summaries
