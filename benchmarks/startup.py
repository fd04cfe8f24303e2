"""Start-up cost of `ae-batch` jobs and of `snakemake -n`: what every Snakemake job pays once.

* ``import <stage>``: a fresh interpreter importing what the subcommand imports, start to exit (the exit of
  an interpreter holding torch, scipy and matplotlib takes most of a second, which is why the train job
  logs its first step before this time);
* ``ae-batch train``: a real train job of one optimizer step on a small prepared dataset, timed from
  start to the log line it writes after that step and its validation pass (an upper bound of "start-up
  to the first optimizer step"), and to its exit (after writing its outputs);
* ``snakemake -n``: planning the default study with nothing built.

    python benchmarks/startup.py        # median of 3 → benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
IMPORTS = {
    "ae-batch --help": "import ae_batch.cli",
    "import train job": "import ae_batch.cli, ae_batch.stages.train, ae_batch.training.loop, ae_batch.training.system",
    "import evaluate job": "import ae_batch.cli, ae_batch.stages.evaluate, ae_batch.evaluation.downstream, torch",
    "import track job": "import ae_batch.cli, ae_batch.stages.track, mlflow.tracking",
    "import aggregate job": "import ae_batch.cli, ae_batch.stages.aggregate, ae_batch.evaluation.stats",
    "ae-batch status": "import ae_batch.cli, ae_batch.status",
}


def timed(cmd: list[str], cwd: Path = REPO) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def timed_first_step(cmd: list[str]) -> tuple[float, float]:
    """(seconds until the job logs its first epoch line, which it writes right after the first optimizer
    step and its validation pass; seconds until it exits): an upper bound on start-up to the first step."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = float("nan")
    assert proc.stderr is not None
    for line in proc.stderr:
        if first != first and "step 1/1" in line:
            first = time.perf_counter() - start
    if proc.wait() != 0 or first != first:
        raise RuntimeError(f"{' '.join(cmd)} failed or logged no first step")
    return first, time.perf_counter() - start


def one_step_spec(tmp: Path) -> Path:
    """A prepared 300-subject EHR cohort and the spec of a one-step train group."""
    sys.path.insert(0, str(REPO / "tests"))
    from train_helpers import make_spec

    from ae_batch.config import ProtocolConfig, SplitsConfig
    from ae_batch.data.ehr import build_events_dataset
    from ae_batch.data.prepared import save_prepared
    from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort

    synthesize_ehr_cohort(tmp / "raw", n_subjects=300, n_phenotypes=60, seed=1)
    entry = {"kind": "events", "events": str(tmp / "raw/events.csv"), "subjects": str(tmp / "raw/subjects.csv"),
             "code_map": str(tmp / "raw/code_map.csv"), "id_column": "subject_id", "code_column": "code",
             "sex_column": "sex", "map_code_column": "ICD9", "map_phenotype_column": "PheCode",
             "map_sex_column": "sex", "min_count": 2, "keep_sex_restricted": False}  # fmt: skip
    save_prepared(tmp / "prepared", build_events_dataset(entry, SplitsConfig()))
    return make_spec(tmp, tmp / "prepared", 4, [(0, 1e-3)], ProtocolConfig("p", "steps", steps=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    times = {
        "python -c pass": statistics.median(timed([sys.executable, "-c", "pass"]) for _ in range(a.repeats))
    }
    for name, code in IMPORTS.items():
        times[name] = statistics.median(timed([sys.executable, "-c", code]) for _ in range(a.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        spec = one_step_spec(Path(tmp))
        cmd = [sys.executable, "-m", "ae_batch", "train", "--spec", str(spec), "--accelerator", "cpu"]
        runs = [timed_first_step(cmd) for _ in range(a.repeats)]
        times["ae-batch train (start to first step's log line)"] = statistics.median(r[0] for r in runs)
        times["ae-batch train (1 step, start to exit)"] = statistics.median(r[1] for r in runs)
        with tempfile.TemporaryDirectory() as work:
            times["snakemake -n (default study)"] = statistics.median(
                timed([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-n", "--quiet"], cwd=Path(work))
                for _ in range(a.repeats)
            )
    for name, t in times.items():
        print(f"{name:<42} {t:6.2f} s")
    out = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "torch": _torch_version(),
           "date": dt.date.today().isoformat(), "command": "python benchmarks/startup.py", "times": times}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(out, indent=2) + "\n")


def _torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


if __name__ == "__main__":
    main()
