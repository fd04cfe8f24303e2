"""What resuming saves: a train job run in full, then the same job SIGKILLed once it logs epoch K of N
and run again (it resumes from the checkpoint written at the end of epoch K).

The default study's EHR cohort (1,500 subjects × 300 phenotypes), the default MLP, 6 members stacked,
batch 4, 40 epochs, killed after epoch 30.

    python benchmarks/resume_saved.py     → benchmarks/results/resume.json
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
EPOCHS, KILL_AFTER, SEEDS, BATCH = 40, 30, 6, 4


def _train(spec: Path) -> list[str]:
    return [sys.executable, "-m", "ae_batch", "train", "--spec", str(spec), "--accelerator", "cpu"]


def main() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from train_helpers import make_spec

    from ae_batch.config import ModelConfig, ProtocolConfig, SplitsConfig
    from ae_batch.data.ehr import build_events_dataset
    from ae_batch.data.prepared import save_prepared
    from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize_ehr_cohort(root / "raw", n_subjects=1500, n_phenotypes=300, seed=7)
        entry = {"kind": "events", "events": str(root / "raw/events.csv"), "subjects": str(root / "raw/subjects.csv"),
                 "code_map": str(root / "raw/code_map.csv"), "id_column": "subject_id", "code_column": "code",
                 "sex_column": "sex", "map_code_column": "ICD9", "map_phenotype_column": "PheCode",
                 "map_sex_column": "sex", "min_count": 1, "keep_sex_restricted": False}  # fmt: skip
        save_prepared(root / "prepared", build_events_dataset(entry, SplitsConfig()))
        members = [(s, 1e-3) for s in range(SEEDS)]
        protocol = ProtocolConfig("paper", "epochs", epochs=EPOCHS)

        def spec(name: str) -> Path:
            return make_spec(
                root / name, root / "prepared", BATCH, members, protocol, ModelConfig(kind="mlp")
            )

        full = spec("full")
        start = time.perf_counter()
        subprocess.run(_train(full), check=True, capture_output=True)
        t_full = time.perf_counter() - start

        killed = spec("killed")
        start = time.perf_counter()
        proc = subprocess.Popen(_train(killed), stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if f"epoch {KILL_AFTER}/{EPOCHS}" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        t_killed = time.perf_counter() - start
        start = time.perf_counter()
        rerun = subprocess.run(_train(killed), check=True, capture_output=True, text=True)
        t_resume = time.perf_counter() - start
        resumed = next((ln for ln in rerun.stderr.splitlines() if "resumed at" in ln), "")
        cells = [p / "results/ehr/paper" / f"bs{BATCH}" for p in (root / "full", root / "killed")]
        identical = all(
            (cells[0] / f"seed{s}/model.pt").read_bytes() == (cells[1] / f"seed{s}/model.pt").read_bytes()
            for s in range(SEEDS)
        )
    out = {
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "torch": version("torch"), "date": dt.date.today().isoformat(),
        "command": "python benchmarks/resume_saved.py", "epochs": EPOCHS, "killed_after_epoch": KILL_AFTER,
        "full_seconds": t_full, "killed_at_seconds": t_killed, "resumed_seconds": t_resume,
        "saved_seconds": t_full - t_resume, "resume_line": resumed.split(" from ")[0],
        "bitwise_identical": identical,
    }  # fmt: skip
    print(json.dumps(out, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "resume.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
