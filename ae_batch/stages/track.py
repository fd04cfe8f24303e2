"""Stage ``track``: one MLflow child run per member of a dataset, written from the members' files.

Idempotent: a member whose run already holds the same content (a hash of its ``train.json``,
``eval.json`` and the sharing policy) is left untouched, so adding a seed adds runs without touching the
others; a member whose content changed (retrained, or re-evaluated) gets its run replaced. Each run spans
the member's training start to its evaluation end, and carries every hyperparameter as a param, the
evaluation metrics (named as the summary columns), the per-validation curves by optimizer step, and
artifacts. Writes ``<dataset>/mlflow_runs.csv`` (member key → run id) for the summary.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ae_batch import tracking
from ae_batch.io import read_json, write_csv

TRAIN_METRICS = (
    "epochs", "steps", "samples_seen", "best_epoch", "best_step", "val_recon_loss", "final_train_loss",
    "train_seconds", "validation_seconds", "samples_per_second",
)  # fmt: skip


def per_subject_for_tracking(table: pd.DataFrame, subject_ids: dict[str, Any]) -> pd.DataFrame | None:
    """The per-subject table as MLflow may see it: raw ids only if asked, else salted hashes.

    A tracking server is a wider audience than the results folder. The salt is random per study and
    stays in ``results/<study>/``, so hashes can be linked back locally but not guessed from a small id
    space (e.g. ``BraTS2021_00000``…). Without a salt file nothing is shared.
    """
    if subject_ids.get("log_raw"):
        return table
    salt_file = subject_ids.get("salt_file")
    if not salt_file or not Path(salt_file).exists():
        return None
    salt = Path(salt_file).read_text().strip()
    hashed = table.copy()
    hashed["subject_id"] = [
        hashlib.sha256(f"{salt}:{s}".encode()).hexdigest()[:16] for s in table["subject_id"]
    ]
    return hashed.rename(columns={"subject_id": "subject_hash"})


def _content(member_dir: Path, subject_ids: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in ("train.json", "eval.json"):
        h.update((member_dir / name).read_bytes())
    h.update(json.dumps({"log_raw": bool(subject_ids.get("log_raw"))}).encode())
    return h.hexdigest()[:20]


def _params(spec: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    protocol = spec["protocol"]
    return {
        "dataset": train["dataset"],
        "protocol": train["protocol"],
        "batch_size": train["batch_size"],
        "seed": train["seed"],
        "learning_rate": train["learning_rate"],
        "member": train["member"],
        "train_group": train["train_group"],
        "protocol.budget": protocol["budget"],
        "protocol.epochs": protocol["epochs"],
        "protocol.steps": protocol["steps"],
        "protocol.lr": protocol["lr"],
        "protocol.reference_batch_size": protocol["reference_batch_size"],
        "protocol.validate_every_steps": protocol["validate_every_steps"],
        **{f"model.{k}": v for k, v in spec["model"].items()},
        **{f"training.{k}": v for k, v in spec["training"].items()},
        "n_train": train["n_train"],
        "init_sha256": train["init_sha256"],
    }


def track_member(
    tracking_uri: str,
    experiment_id: str,
    parent_id: str,
    study: str,
    spec: dict[str, Any],
    member_dir: Path,
    subject_ids: dict[str, Any],
) -> tuple[str, str, bool]:
    """(key, run id, created?) for one member."""
    train, ev = read_json(member_dir / "train.json"), read_json(member_dir / "eval.json")
    key = f"{study}/{train['dataset']}/{train['protocol']}/bs{train['batch_size']}/{train['member']}"
    content = _content(member_dir, subject_ids)
    for run in tracking.find_runs(tracking_uri, experiment_id, key):
        same = run.data.tags.get(tracking.CONTENT_TAG) == content and run.info.status == "FINISHED"
        if same and run.data.tags.get("mlflow.parentRunId") == parent_id:
            return key, run.info.run_id, False
    tags = {
        "mlflow.parentRunId": parent_id,
        tracking.LEVEL_TAG: "grid_point",
        tracking.CONTENT_TAG: content,
        "dataset": train["dataset"],
        "protocol": train["protocol"],
        "batch_size": str(train["batch_size"]),
        "seed": str(train["seed"]),
        "learning_rate": repr(train["learning_rate"]),
        "lr_selected": "" if ev.get("lr_selected") is None else str(ev["lr_selected"]).lower(),
        "diverged": str(bool(train.get("diverged"))).lower(),
    }
    name = f"{train['protocol']}-bs{train['batch_size']}-{train['member']}"
    run_id = tracking.replace_run(tracking_uri, experiment_id, key, tags, name, train.get("started_ms"))
    try:
        tracking.log_params(tracking_uri, run_id, _params(spec, train))
        metrics = {k: train[k] for k in TRAIN_METRICS if k in train}
        metrics.update({k: v for k, v in ev.items() if k not in ("finished_ms", "lr_selected")})
        metrics["system/peak_rss_mb"] = train.get("peak_rss_mb")
        tracking.log_metrics(tracking_uri, run_id, metrics)
        history = pd.read_csv(member_dir / "history.csv").to_dict("records")
        tracking.log_history(tracking_uri, run_id, history, int(train.get("started_ms") or 0))
        files = [member_dir / n for n in ("history.csv", "eval.json", "folds.csv", "reconstructions.png")]
        if (member_dir / "per_subject.csv").exists():
            shared = per_subject_for_tracking(
                pd.read_csv(member_dir / "per_subject.csv", dtype={"subject_id": str}), subject_ids
            )
            if shared is not None:
                write_csv(member_dir / "per_subject_mlflow.csv", shared)
                files.append(member_dir / "per_subject_mlflow.csv")
        tracking.log_artifacts(tracking_uri, run_id, files)
        features = Path(spec["prepared"]) / "features.npy"
        if features.exists():
            meta = read_json(Path(spec["prepared"]) / "meta.json")
            digest = hashlib.sha256(
                json.dumps(meta.get("input_contract", {}), sort_keys=True).encode()
            ).hexdigest()
            tracking.log_dataset_input(
                tracking_uri, run_id, train["dataset"], digest, str(Path(spec["prepared"]))
            )
        tracking.set_status(tracking_uri, run_id, "FINISHED", ev.get("finished_ms"))
    except BaseException:
        tracking.set_status(tracking_uri, run_id, "FAILED")
        raise
    return key, run_id, True


def track_dataset(
    eval_manifests: Sequence[str | Path],
    out_path: str | Path,
    tracking_uri: str,
    experiment: str,
    study: str,
    dataset: str,
    subject_ids: dict[str, Any] | None = None,
) -> pd.DataFrame:
    exp_id = tracking.ensure_experiment(tracking_uri, experiment)
    parent = tracking.ensure_parent_run(tracking_uri, exp_id, study, dataset)
    rows, created = [], 0
    for path in map(Path, eval_manifests):
        group_id = path.name.split(".")[0]
        spec = read_json(path.with_name(f"{group_id}.spec.json"))
        for m in spec["members"]:
            key, run_id, new = track_member(
                tracking_uri, exp_id, parent, study, spec, Path(m["dir"]), subject_ids or {}
            )
            rows.append({"key": key.split("/", 1)[1], "run_id": run_id})
            created += new
    table = pd.DataFrame(rows, columns=["key", "run_id"])
    write_csv(out_path, table)
    print(f"MLflow: {dataset}: {created} run(s) written, {len(rows) - created} unchanged", file=sys.stderr)
    return table
