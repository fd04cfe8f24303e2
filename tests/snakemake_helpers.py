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
