"""MLflow: the one place that creates experiments and runs.

Layout: experiment ``ae-batch-<study>`` (``mlflow.experiment_name``); one parent run per dataset (tag
``ae_batch.key = <study>/<dataset>``); one child run per member (grid point), tag
``ae_batch.key = <study>/<dataset>/<protocol>/bs<B>/<member>``. Everything goes through ``MlflowClient``
with explicit run ids, so it works across the processes of a Snakemake run and against a tracking
server. Children are written from the files the train and evaluate jobs leave (``track`` stage), so
training never waits on, or is rerun for, the tracking store.

Credentials never come from the config: MLflow reads ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` from the environment, and a URI carrying ``user:password@`` is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ae_batch.errors import ConfigError

KEY_TAG = "ae_batch.key"
LEVEL_TAG = "ae_batch.level"
CONTENT_TAG = "ae_batch.content"


def check_uri(uri: str) -> str:
    """Refuse a tracking URI with embedded credentials (they would end up in logs and job metadata)."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        raise ConfigError(
            "mlflow.tracking_uri must not contain a user name or password; set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD in the environment of the jobs instead"
        )
    return uri


def client(tracking_uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=check_uri(tracking_uri))


def _retry(fn: Any, *args: Any, attempts: int = 8, **kwargs: Any) -> Any:
    """sqlite under many writers can answer 'database is locked': retry with backoff."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - MLflow wraps sqlite errors in several types
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.2 * 2**i)
    return None


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside an sqlite database (``<db folder>/mlartifacts``); a server decides its own."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return (Path(tracking_uri[len(prefix) :]).parent / "mlartifacts").resolve().as_uri()
    return None


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create the experiment if needed (restoring a deleted one); return its id."""
    mc = client(tracking_uri)
    exp = mc.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mc.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return mc.create_experiment(name, artifact_location=artifact_location(tracking_uri))


def find_runs(tracking_uri: str, experiment_id: str, key: str) -> list[Any]:
    return client(tracking_uri).search_runs(
        [experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=100
    )


def ensure_parent_run(
    tracking_uri: str, experiment_id: str, study: str, dataset: str, start_ms: int | None = None
) -> str:
    """The parent run of ``study/dataset``: found by its key tag, created (RUNNING) if missing."""
    key = f"{study}/{dataset}"
    runs = find_runs(tracking_uri, experiment_id, key)
    if runs:
        return runs[0].info.run_id
    tags = {KEY_TAG: key, "dataset": dataset, LEVEL_TAG: "dataset"}
    run = _retry(
        client(tracking_uri).create_run, experiment_id, start_time=start_ms, tags=tags, run_name=dataset
    )
    return run.info.run_id


def set_status(tracking_uri: str, run_id: str, status: str, end_ms: int | None = None) -> None:
    mc = client(tracking_uri)
    if status == "RUNNING":
        _retry(mc.update_run, run_id, status="RUNNING")
    else:
        _retry(mc.set_terminated, run_id, status, end_ms)


def fail_stale_runs(tracking_uri: str, experiment_id: str, level: str = "grid_point") -> int:
    """Mark runs of ``level`` left RUNNING by killed jobs as FAILED; return how many."""
    mc = client(tracking_uri)
    runs = mc.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{LEVEL_TAG}` = '{level}'",
        max_results=5000,
    )
    for run in runs:
        _retry(mc.set_terminated, run.info.run_id, "FAILED")
    return len(runs)


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        _retry(client(tracking_uri).log_batch, run_id, params=items[start : start + 100])


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
    """Log finite numeric metrics in batches (one call per metric costs ~3 ms)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _finite(v)]
    for start in range(0, len(items), 1000):
        _retry(client(tracking_uri).log_batch, run_id, metrics=items[start : start + 1000])


def log_history(tracking_uri: str, run_id: str, rows: Iterable[Mapping[str, Any]], start_ms: int) -> None:
    """Curves at each validation point: ``train/loss``, ``val/loss`` and ``train/epoch`` by optimizer step."""
    from mlflow.entities import Metric

    items = []
    for row in rows:
        step, stamp = int(row["step"]), start_ms + int(1000 * float(row.get("seconds", 0) or 0))
        for name, col in (("train/loss", "train_loss"), ("val/loss", "val_loss"), ("train/epoch", "epoch")):
            if _finite(row.get(col)):
                items.append(Metric(name, float(row[col]), stamp, step))
    for start in range(0, len(items), 1000):
        _retry(client(tracking_uri).log_batch, run_id, metrics=items[start : start + 1000])


def log_artifacts(
    tracking_uri: str, run_id: str, paths: Iterable[str | Path], artifact_path: str | None = None
) -> None:
    mc = client(tracking_uri)
    for path in paths:
        if Path(path).exists():
            _retry(mc.log_artifact, run_id, str(path), artifact_path)


def log_dataset_input(tracking_uri: str, run_id: str, name: str, digest: str, source: str) -> None:
    """Record the prepared dataset a run used (MLflow's dataset inputs: name, digest, source path)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}))
    tags = [InputTag(key="mlflow.data.context", value="training")]
    _retry(client(tracking_uri).log_inputs, run_id, datasets=[DatasetInput(dataset=dataset, tags=tags)])


def replace_run(
    tracking_uri: str, experiment_id: str, key: str, tags: Mapping[str, str], name: str, start_ms: int | None
) -> str:
    """Delete the runs of ``key`` and create a fresh one (RUNNING) with ``tags``; return its id."""
    mc = client(tracking_uri)
    for old in find_runs(tracking_uri, experiment_id, key):
        _retry(mc.delete_run, old.info.run_id)
    run = _retry(
        mc.create_run, experiment_id, start_time=start_ms, tags={**tags, KEY_TAG: key}, run_name=name
    )
    return run.info.run_id
