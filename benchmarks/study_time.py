"""The default study from scratch (`snakemake --cores 8` in a clean copy), and where the time goes.

Per rule: the number of jobs and the sum of their wall times, read from Snakemake's log of the run. The
study's answer (verdict.csv, verdict_vs_paper.csv, noise_scale.csv, stats.csv, summary.csv) is kept in
``benchmarks/results/default_study/`` for the README.

    python benchmarks/study_time.py       → benchmarks/results/study_time.json
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")


def rule_seconds(log: str) -> dict[str, dict[str, float]]:
    """Sum of job wall times per rule, from the timestamps Snakemake prints at a job's start and end."""
    started: dict[str, tuple[str, datetime]] = {}
    per_rule: dict[str, dict[str, float]] = {}
    stamp = rule = None
    for line in log.splitlines():
        m = STAMP.match(line.strip())
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        s = line.strip()
        if s.startswith(("rule ", "localrule ")) and s.endswith(":"):
            rule = s.split()[1].rstrip(":")
        elif s.startswith("jobid:") and rule and stamp:
            started[s.split()[1]] = (rule, stamp)
        elif s.startswith("Finished jobid:") and stamp:
            job = s.split()[2]
            if job in started:
                r, t0 = started.pop(job)
                entry = per_rule.setdefault(r, {"jobs": 0, "seconds": 0.0})
                entry["jobs"] += 1
                entry["seconds"] += (stamp - t0).total_seconds()
    return per_rule


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        ignore = shutil.ignore_patterns(
            ".venv",
            "results",
            ".snakemake",
            "mlflow.db*",
            "mlartifacts",
            ".git",
            "data_synthetic",
            ".ae-batch.lock",
        )
        shutil.copytree(REPO, work, ignore=ignore)
        (work / "data_synthetic").mkdir(exist_ok=True)
        start = time.perf_counter()
        run = subprocess.run([str(SNAKEMAKE), "--cores", "8"], cwd=work, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(run.stderr[-3000:])
        import pandas as pd

        summary = pd.read_csv(work / "results/default/summary.csv")
        log = run.stdout + run.stderr
        kept = RESULTS / "default_study"
        kept.mkdir(parents=True, exist_ok=True)
        for name in ("verdict.csv", "verdict_vs_paper.csv", "noise_scale.csv", "stats.csv", "summary.csv"):
            shutil.copy(work / "results/default" / name, kept / name)
    rules = rule_seconds(log)
    from importlib.metadata import version

    out = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "torch": version("torch"),
           "date": dt.date.today().isoformat(), "command": "python benchmarks/study_time.py",
           "wall_seconds": wall, "members": len(summary), "train_jobs": int(rules.get("train", {}).get("jobs", 0)),
           "cores_used": os.cpu_count(), "rules": dict(sorted(rules.items(), key=lambda kv: -kv[1]["seconds"]))}  # fmt: skip
    print(json.dumps(out, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "study_time.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
