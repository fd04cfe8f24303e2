"""Stage ``figures``: the study's figures from the aggregated tables and the grid points' files.

One folder per figure kind under ``results/<study>/figures/`` (so the Snakemake report can caption each
kind); the figures are also logged to each dataset's MLflow parent run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ae_batch import tracking


def make_figures(study_dir: str | Path, study: str, tracking_uri: str | None = None) -> dict[str, list[Path]]:
    from ae_batch.figures import KINDS, make_study_figures

    study_dir = Path(study_dir)
    summary = pd.read_csv(study_dir / "summary.csv")
    baselines = pd.read_csv(study_dir / "baselines.csv")
    for kind in KINDS:
        (study_dir / "figures" / kind).mkdir(parents=True, exist_ok=True)
    made = make_study_figures(study_dir, study_dir, summary, baselines)
    if tracking_uri:
        for dataset in sorted(summary["dataset"].astype(str).unique()):
            run_id = tracking.ensure_parent_run(tracking_uri, study, dataset)
            paths = [
                p for kind_paths in made.values() for p in kind_paths if p.name.startswith(f"{dataset}_")
            ]
            tracking.log_artifacts(tracking_uri, run_id, paths, artifact_path="figures")
    n = sum(len(v) for v in made.values())
    print(f"wrote {n} figures under {study_dir / 'figures'}", file=sys.stderr)
    return made
