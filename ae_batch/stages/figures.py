"""Stage ``figures``: the study's figures from the aggregated tables and the members' files.

One folder per figure kind under ``results/<study>/figures/`` (so the Snakemake report can caption each
kind). The MLflow ``publish`` stage logs each figure to its dataset's parent run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ae_batch.io import read_json


def make_figures(
    study_dir: str | Path, prepared: Mapping[str, str | Path], labels: Mapping[str, str] | None = None
) -> dict[str, list[Path]]:
    from ae_batch.figures import make_study_figures

    study_dir = Path(study_dir)
    summary = pd.read_csv(study_dir / "summary.csv")
    baselines = pd.read_csv(study_dir / "baselines.csv")
    noise = pd.read_csv(study_dir / "noise_scale.csv")
    subjects, sex_names = {}, {}
    for dataset, folder in prepared.items():
        subjects[dataset] = pd.read_csv(Path(folder) / "subjects.csv", dtype={"subject_id": str})
        mapping = read_json(Path(folder) / "meta.json").get("sex_mapping", {})
        sex_names[dataset] = {int(v): str(k) for k, v in mapping.items()}
    made = make_study_figures(
        study_dir, summary, baselines, noise, subjects, sex_names, protocol_labels=labels
    )
    print(
        f"wrote {sum(len(v) for v in made.values())} figures under {study_dir / 'figures'}", file=sys.stderr
    )
    return made
