"""Start-up cost of each `ae-batch` subcommand and of `snakemake -n`, and optionally the default study.

Start-up = a fresh interpreter importing what the subcommand imports before it does any work (CLI
parsing plus the stage module and its wings), which every Snakemake job pays once.

    python benchmarks/startup.py                 # start-up times (median of 3)
    python benchmarks/startup.py --study         # also: wall time of `snakemake --cores 8` from scratch
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
STAGES = {
    "--help": "import ae_batch.cli",
    "synthesize": "import ae_batch.cli, ae_batch.stages.synthesize, ae_batch.data.synthetic_ehr",
    "prepare": "import ae_batch.cli, ae_batch.stages.prepare, ae_batch.data.ehr",
    "prepare (mri)": "import ae_batch.cli, ae_batch.stages.prepare, ae_batch.data.mri_prepare, monai.transforms",
    "init": "import ae_batch.cli, ae_batch.stages.init",
    "tracking-init": "import ae_batch.cli, ae_batch.stages.tracking_init, mlflow.tracking",
    "train": "import ae_batch.cli, ae_batch.stages.train, ae_batch.models.systems, ae_batch.data.modules, mlflow.tracking",
    "evaluate": "import ae_batch.cli, ae_batch.stages.evaluate, mlflow.tracking",
    "baselines": "import ae_batch.cli, ae_batch.stages.baselines",
    "aggregate": "import ae_batch.cli, ae_batch.stages.aggregate, ae_batch.evaluation.stats, mlflow.tracking",
    "figures": "import ae_batch.cli, ae_batch.stages.figures, ae_batch.figures, mlflow.tracking",
}


def timed(cmd: list[str], cwd: Path = REPO) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--study", action="store_true", help="also time the default study from scratch")
    a = p.parse_args()
    base = statistics.median(timed([sys.executable, "-c", "pass"]) for _ in range(a.repeats))
    print(f"python start alone: {base:.2f} s")
    for name, code in STAGES.items():
        t = statistics.median(timed([sys.executable, "-c", code]) for _ in range(a.repeats))
        print(f"ae-batch {name:<15} {t:6.2f} s")
    t = statistics.median(timed([str(SNAKEMAKE), "-n", "--quiet"]) for _ in range(a.repeats))
    print(f"snakemake -n            {t:6.2f} s (default config, nothing built)")
    if a.study:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "repo"
            shutil.copytree(
                REPO,
                work,
                ignore=shutil.ignore_patterns(
                    ".venv", "results", ".snakemake", "mlflow.db*", "mlartifacts", ".git", "data_synthetic"
                ),
            )
            (work / "data_synthetic").mkdir(exist_ok=True)
            t = timed([str(SNAKEMAKE), "--cores", "8"], cwd=work)
            print(f"default study (snakemake --cores 8, from scratch): {t / 60:.1f} min")


if __name__ == "__main__":
    main()
