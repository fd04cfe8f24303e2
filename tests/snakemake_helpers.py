"""Running the real Snakemake workflow from tests: the command, its environment, a tiny ICD dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

# The workflow's synthetic ICD events cohort, small enough for a DAG run in tests.
TINY_ICD = {
    "kind": "events",
    "events": "data_synthetic/ehr/events.csv",
    "subjects": "data_synthetic/ehr/subjects.csv",
    "code_map": "data_synthetic/ehr/code_map.csv",
    "min_count": 3,
}


def snakemake_cmd(configfile: str, *extra: str) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--configfile", configfile, "--cores", "2", *extra]


def snakemake_env() -> dict[str, str]:
    """The environment of this interpreter's virtualenv, as after `. .venv/bin/activate`."""
    return {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ.get('PATH', '')}"}


def run_snakemake(workdir: Path, configfile: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        snakemake_cmd(configfile, *extra),
        cwd=workdir,
        env=snakemake_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


# A tiny EHR-only study with both kinds of budget: ~30 s from scratch.
TINY_EHR_STUDY = {
    "study": "tiny",
    "batch_sizes": [2, 16],
    "seeds": [0, 1],
    "protocols": {
        "paper": {"budget": "epochs", "lr": "fixed"},
        "steps": {"budget": "steps", "steps": 40, "lr": "sqrt", "reference_batch_size": 4},
    },
    "training": {"max_epochs": 3},
    "model": {"hidden_dims": [32], "latent_dim": 4},
    "downstream": {"folds": 3, "repeats": 1},
    "synthetic": {"ehr": {"n_subjects": 160, "n_phenotypes": 30, "seed": 3}},
    "datasets": {"icd": TINY_ICD},
}


def write_config(workdir: Path, config: dict, name: str = "study.yaml") -> str:
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(yaml.safe_dump(config))
    return name


def planned_jobs(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """rule name → the output paths of its jobs, from a dry run's rule blocks."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in (result.stdout + result.stderr).splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            rule = stripped.split()[1].rstrip(":")
            jobs.setdefault(rule, [])
        elif rule and stripped.startswith("output:"):
            jobs[rule].append(stripped[len("output:") :].strip())
        elif not line.startswith(" "):
            rule = None if not stripped.startswith("[") else rule
    return jobs
