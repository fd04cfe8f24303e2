"""MLflow: the one place that creates experiments and runs.

Layout: experiment = study; one parent run per study × dataset (tag ``ae_batch.key = <study>/<dataset>``);
one child run per grid point, named ``bs<B>-seed<S>`` (tag ``ae_batch.key = <study>/<dataset>/bs<B>/seed<S>``).
Everything goes through ``MlflowClient`` with explicit run ids, so it works across the processes of a
Snakemake run. A rerun of a grid point deletes the earlier child of the same key (a killed job leaves a
RUNNING run behind; a failed one a FAILED run), so the UI shows one run per grid point.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

KEY_TAG = "ae_batch.key"


def client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _retry(fn, *args, attempts: int = 8, **kwargs):
    """sqlite under many writers can answer 'database is locked': retry with backoff."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - MLflow wraps sqlite errors in several types
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.2 * 2**i)
    return None


def ensure_experiment(tracking_uri: str, study: str) -> str:
    """Create the tracking database and the study's experiment if needed; return the experiment id."""
    mc = client(tracking_uri)
    exp = mc.get_experiment_by_name(study)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mc.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return mc.create_experiment(study, artifact_location=artifact_location(tracking_uri))


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside an sqlite database (``<db folder>/mlartifacts``), not in the working directory."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        db = Path(tracking_uri[len(prefix) :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def _find_runs(mc, experiment_id: str, key: str) -> list[Any]:
    return mc.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=100)


def ensure_parent_run(tracking_uri: str, study: str, dataset: str) -> str:
    """The parent run of ``study/dataset``: found by its key tag, created if missing."""
    mc = client(tracking_uri)
    exp_id = ensure_experiment(tracking_uri, study)
    key = f"{study}/{dataset}"
    runs = _find_runs(mc, exp_id, key)
    if runs:
        return runs[0].info.run_id
    run = mc.create_run(
        exp_id, run_name=dataset, tags={KEY_TAG: key, "dataset": dataset, "ae_batch.level": "dataset"}
    )
    mc.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def start_child_run(
    tracking_uri: str, study: str, dataset: str, batch_size: int, seed: int, params: Mapping[str, Any]
) -> str:
    """Create the grid point's child run (replacing any earlier one of the same key); return its id."""
    mc = client(tracking_uri)
    exp_id = ensure_experiment(tracking_uri, study)
    parent = ensure_parent_run(tracking_uri, study, dataset)
    key = f"{study}/{dataset}/bs{batch_size}/seed{seed}"
    for old in _find_runs(mc, exp_id, key):
        _retry(mc.delete_run, old.info.run_id)
    tags = {
        KEY_TAG: key,
        "mlflow.parentRunId": parent,
        "dataset": dataset,
        "batch_size": str(batch_size),
        "seed": str(seed),
        "ae_batch.level": "grid_point",
    }
    run = _retry(mc.create_run, exp_id, run_name=f"bs{batch_size}-seed{seed}", tags=tags)
    log_params(tracking_uri, run.info.run_id, params)
    return run.info.run_id


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        _retry(client(tracking_uri).log_batch, run_id, params=items[start : start + 100])


def log_metrics(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int | None = None
) -> None:
    """Log finite metrics in one batch (one call per metric costs ~3 ms)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, step or 0)
        for k, v in metrics.items()
        if v is not None and isinstance(v, int | float) and v == v and abs(v) != float("inf")
    ]
    for start in range(0, len(items), 1000):
        _retry(client(tracking_uri).log_batch, run_id, metrics=items[start : start + 1000])


def log_history(tracking_uri: str, run_id: str, rows: Iterable[Mapping[str, float]]) -> None:
    """Per-epoch curves: ``train/loss`` and ``val/loss`` by epoch, in one batch."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = []
    for row in rows:
        epoch = int(row["epoch"])
        items.append(Metric("train/loss", float(row["train_loss"]), now, epoch))
        items.append(Metric("val/loss", float(row["val_loss"]), now, epoch))
        items.append(Metric("train/optimizer_steps", float(row["step"]), now, epoch))
    for start in range(0, len(items), 1000):
        _retry(client(tracking_uri).log_batch, run_id, metrics=items[start : start + 1000])


def log_artifacts(
    tracking_uri: str, run_id: str, paths: Iterable[str | Path], artifact_path: str | None = None
) -> None:
    mc = client(tracking_uri)
    for path in paths:
        if Path(path).exists():
            _retry(mc.log_artifact, run_id, str(path), artifact_path)


def set_tags(tracking_uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    mc = client(tracking_uri)
    for k, v in tags.items():
        _retry(mc.set_tag, run_id, k, str(v))


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _retry(client(tracking_uri).set_terminated, run_id, status)


def fail_stale_runs(tracking_uri: str, study: str) -> int:
    """Mark RUNNING grid-point runs of the study FAILED (left behind by killed jobs); return how many."""
    mc = client(tracking_uri)
    exp = mc.get_experiment_by_name(study)
    if exp is None:
        return 0
    runs = mc.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in runs:
        _retry(mc.set_terminated, run.info.run_id, "FAILED")
    return len(runs)


def log_dataset_input(
    tracking_uri: str, run_id: str, name: str, digest: str, source: str | Path, context: str = "training"
) -> None:
    """Record the prepared dataset a run used (MLflow's dataset inputs: name, digest, source path)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=name,
        digest=digest[:36],
        source_type="local",
        source=json.dumps({"uri": str(Path(source).resolve())}),
    )
    tags = [InputTag(key="mlflow.data.context", value=context)]
    _retry(client(tracking_uri).log_inputs, run_id, datasets=[DatasetInput(dataset=dataset, tags=tags)])


class system_metrics:  # noqa: N801 - used as a context manager, like mlflow.start_run
    """Sample CPU, memory (and GPU) usage into ``run_id`` while the block runs.

    Uses MLflow's system-metrics monitor through the fluent API, attached to the run we created; the
    run's status is left to the caller (``finish_run``).
    """

    def __init__(self, tracking_uri: str, run_id: str, interval_s: float = 1.0) -> None:
        self.tracking_uri, self.run_id, self.interval_s = tracking_uri, run_id, interval_s
        self._monitor = None

    def __enter__(self) -> system_metrics:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=self.interval_s,
                samples_before_logging=1,
                resume_logging=False,
                tracking_uri=self.tracking_uri,
            )
            self._monitor.start()
        except Exception as exc:  # noqa: BLE001 - monitoring must never break training
            print(f"system metrics not recorded: {exc}", file=sys.stderr)
            self._monitor = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._monitor is not None:
            self._monitor.finish()
