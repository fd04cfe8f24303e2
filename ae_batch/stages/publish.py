"""Stage ``publish``: the study's parent runs in MLflow get their params, verdict metrics, tables, input
contract and figures (each figure to exactly its own dataset's parent).

Parent params: the dataset kind, subject counts per split and the grid (batch sizes, seeds, protocols).
MLflow forbids changing a logged param, so when the grid changed (a seed added) the parent is replaced
by a new one and the children are re-pointed to it. Parent metrics, per protocol and metric:
``verdict.<protocol>.<metric>.{direction,spearman_rho,friedman_p,holm_p}`` (direction +1 = larger
batches better, −1 = smaller better, 0 = no evidence).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ae_batch import tracking
from ae_batch.io import read_json, write_json

DIRECTION = {"larger_better": 1.0, "smaller_better": -1.0, "no_evidence": 0.0}
TABLES = ("summary", "stats", "verdict", "noise_scale", "baselines")


def parent_params(meta: dict[str, Any], grid: Mapping[str, Any]) -> dict[str, Any]:
    counts = meta.get("input_contract", {}).get("n_subjects", {})
    return {
        "dataset_kind": meta.get("kind"),
        **{f"n_{split}": n for split, n in counts.items()},
        "batch_sizes": json.dumps(list(grid["batch_sizes"])),
        "seeds": json.dumps(list(grid["seeds"])),
        "protocols": json.dumps(grid["protocols"], sort_keys=True),
    }


def verdict_metrics(verdict: pd.DataFrame) -> dict[str, float]:
    out = {}
    for r in verdict.itertuples(index=False):
        base = f"verdict.{r.protocol}.{r.metric}"
        out[f"{base}.direction"] = DIRECTION.get(r.direction, float("nan"))
        out[f"{base}.spearman_rho"] = r.spearman_rho
        out[f"{base}.friedman_p"] = r.friedman_p
        out[f"{base}.holm_p"] = r.holm_p_smallest_vs_largest
    return out


def _parent_with_params(
    tracking_uri: str, exp_id: str, study: str, dataset: str, params: dict[str, Any]
) -> str:
    run_id = tracking.ensure_parent_run(tracking_uri, exp_id, study, dataset)
    mc = tracking.client(tracking_uri)
    old = mc.get_run(run_id)
    logged = old.data.params
    if any(k in logged and logged[k] != str(v)[:6000] for k, v in params.items()):
        children = mc.search_runs(
            [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=10000
        )
        start = min([c.info.start_time for c in children if c.info.start_time] + [old.info.start_time])
        mc.delete_run(run_id)
        run_id = tracking.ensure_parent_run(tracking_uri, exp_id, study, dataset, start)
        for child in children:
            mc.set_tag(child.info.run_id, "mlflow.parentRunId", run_id)
        if old.info.status == "RUNNING":
            tracking.set_status(tracking_uri, run_id, "RUNNING")
    tracking.log_params(
        tracking_uri, run_id, {k: v for k, v in params.items() if k not in mc.get_run(run_id).data.params}
    )
    return run_id


def publish(
    study_dir: str | Path,
    tracking_uri: str,
    experiment: str,
    study: str,
    prepared: Mapping[str, str | Path],
    grid: Mapping[str, Any],
    figures: Sequence[str | Path],
    out_path: str | Path,
) -> dict[str, str]:
    from ae_batch.figures import figure_dataset

    study_dir = Path(study_dir)
    tables = {name: pd.read_csv(study_dir / f"{name}.csv") for name in TABLES}
    exp_id = tracking.ensure_experiment(tracking_uri, experiment)
    mc = tracking.client(tracking_uri)
    pictures = [Path(p) for folder in figures for p in sorted(Path(folder).glob("*.png"))]
    parents = {}
    for dataset, folder in prepared.items():
        meta = read_json(Path(folder) / "meta.json")
        run_id = _parent_with_params(tracking_uri, exp_id, study, dataset, parent_params(meta, grid))
        parents[dataset] = run_id
        verdict = tables["verdict"][tables["verdict"]["dataset"] == dataset]
        tracking.log_metrics(tracking_uri, run_id, verdict_metrics(verdict))
        for name, table in tables.items():
            part = table[table["dataset"] == dataset] if "dataset" in table else table
            tracking._retry(
                mc.log_table,
                run_id,
                data=part.astype(object).where(part.notna(), None),
                artifact_file=f"{name}.json",
            )
        files = [study_dir / f"{n}.csv" for n in TABLES] + [study_dir / "config.resolved.yaml"]
        tracking.log_artifacts(tracking_uri, run_id, files)
        tracking.log_artifacts(tracking_uri, run_id, [Path(folder) / "meta.json"], "prepared")
        mine = [p for p in pictures if figure_dataset(p) == dataset]
        for p in mine:
            tracking.log_artifacts(tracking_uri, run_id, [p], f"figures/{p.parent.name}")
    link = {"experiment_id": exp_id, "experiment": experiment, "parents": parents}
    write_json(out_path, link)
    print(f"MLflow: published {len(parents)} parent run(s) in experiment '{experiment}'", file=sys.stderr)
    return parents
