"""``tracking-init`` and ``tracking-finish``: the study's MLflow experiment and parent runs around a run.

A fresh sqlite database raced by several processes fails (schema creation), so the Snakefile's
``onstart`` runs ``tracking-init`` once, before any job fans out (and not on a dry run): it creates the
experiment and one parent run per dataset, marks them RUNNING while the study runs, marks child runs
left RUNNING by killed jobs as FAILED, and makes the study's salt for hashed subject ids.
``onsuccess``/``onerror`` run ``tracking-finish``, which marks the parents FINISHED or FAILED.

A parent starts no later than the earliest member already trained (a study re-tracked into a new store
keeps children inside their parent's time span).
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ae_batch import tracking
from ae_batch.io import read_json, write_text


def earliest_start_ms(dataset_dir: Path) -> int | None:
    starts = []
    for path in dataset_dir.glob("*/bs*/groups/*.train.json"):
        try:
            starts.append(int(read_json(path)["started_ms"]))
        except (OSError, ValueError, KeyError):
            continue
    return min(starts) if starts else None


def init_tracking(
    tracking_uri: str,
    experiment: str,
    study: str,
    datasets: Sequence[str],
    results_dir: str | Path,
    salt_file: str | Path | None = None,
) -> dict[str, str]:
    if salt_file is not None and not Path(salt_file).exists():
        write_text(salt_file, secrets.token_hex(16) + "\n")
    exp_id = tracking.ensure_experiment(tracking_uri, experiment)
    now = int(time.time() * 1000)
    parents = {}
    for d in datasets:
        start = earliest_start_ms(Path(results_dir) / d) or now
        parents[d] = tracking.ensure_parent_run(tracking_uri, exp_id, study, d, min(start, now))
        tracking.set_status(tracking_uri, parents[d], "RUNNING")
    stale = tracking.fail_stale_runs(tracking_uri, exp_id)
    print(
        f"MLflow experiment '{experiment}' ready at {tracking_uri} ({len(parents)} parent runs RUNNING"
        + (f", {stale} stale child runs marked FAILED" if stale else "")
        + ")",
        file=sys.stderr,
    )
    return parents


def finish_tracking(
    tracking_uri: str, experiment: str, study: str, datasets: Sequence[str], status: str
) -> None:
    """Mark the study's parent runs ``FINISHED`` or ``FAILED`` (end time: now)."""
    exp_id = tracking.ensure_experiment(tracking_uri, experiment)
    now = int(time.time() * 1000)
    for d in datasets:
        run_id = tracking.ensure_parent_run(tracking_uri, exp_id, study, d, now)
        tracking.set_status(tracking_uri, run_id, status, now)
