"""``tracking-init``: create the MLflow database, experiment and parent runs once, up front.

A fresh sqlite database raced by several processes fails (schema creation), so the Snakefile's
``onstart`` runs this once, before any job fans out (and not on a dry run). It also marks runs left
RUNNING by killed jobs as FAILED, and makes the study's salt for hashed subject ids.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from ae_batch import tracking
from ae_batch.io import write_text


def init_tracking(
    tracking_uri: str, study: str, datasets: Sequence[str], salt_file: str | Path | None = None
) -> dict[str, str]:
    if salt_file is not None and not Path(salt_file).exists():
        write_text(salt_file, secrets.token_hex(16) + "\n")
    tracking.ensure_experiment(tracking_uri, study)
    parents = {d: tracking.ensure_parent_run(tracking_uri, study, d) for d in datasets}
    stale = tracking.fail_stale_runs(tracking_uri, study)
    print(
        f"MLflow experiment '{study}' ready at {tracking_uri} ({stale} stale runs marked FAILED)",
        file=sys.stderr,
    )
    return parents
