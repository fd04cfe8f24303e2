"""One run at the scale of Kerley et al.'s EHR arm, timed on a part and extrapolated (said so).

A synthetic cohort of 3,127 subjects × ~1,800 phenotypes (the paper: 3,127 participants, 1,866 PheCodes),
the default MLP (input → 256 → 128 → 32), the paper protocol (100 epochs, fixed learning rate), 6 seeds
stacked per batch size, batch sizes 1, 4, 16, 32, 64, 100. For each batch size the stacked group trains
``--epochs`` epochs (a fraction of one at small batches) and the measured throughput extrapolates to 100
epochs. Totals assume one core and no other work; with C cores, divide by up to C.

    python benchmarks/paper_scale.py      → benchmarks/results/paper_scale.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ae_batch.config import ModelConfig, ProtocolConfig, SplitsConfig
from ae_batch.data.ehr import build_events_dataset
from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort
from ae_batch.models.factory import build_model
from ae_batch.training.loop import fit_group
from ae_batch.training.protocols import budget_for

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZES = [1, 4, 16, 32, 64, 100]
SEEDS = 6
EPOCHS = 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=3000, help="samples per member timed at each batch size")
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_ehr_cohort(tmp, n_subjects=3127, n_phenotypes=1900, seed=7)
        entry = {"kind": "events", "events": f"{tmp}/events.csv", "subjects": f"{tmp}/subjects.csv",
                 "code_map": f"{tmp}/code_map.csv", "id_column": "subject_id", "code_column": "code",
                 "sex_column": "sex", "map_code_column": "ICD9", "map_phenotype_column": "PheCode",
                 "map_sex_column": "sex", "min_count": 1, "keep_sex_restricted": True}  # fmt: skip
        data = build_events_dataset(entry, SplitsConfig())
    x = torch.from_numpy(np.asarray(data.split_features("train")))
    val = torch.from_numpy(np.asarray(data.split_features("val")))
    n_train, n_features = x.shape
    rows, total = [], 0.0
    for bs in BATCH_SIZES:
        models = []
        for seed in range(SEEDS):
            torch.manual_seed(seed)
            models.append(build_model(ModelConfig(kind="mlp"), (n_features,), "sigmoid"))
        steps = max(1, min(a.samples // bs, -(-n_train // bs)))
        budget = budget_for(ProtocolConfig("paper", "steps", steps=steps), bs, n_train)
        result = fit_group(
            models[0], [m.state_dict() for m in models], x, val, list(range(SEEDS)), [1e-3] * SEEDS, budget
        )
        rate = SEEDS * result.samples / result.train_seconds
        full = SEEDS * EPOCHS * n_train / rate
        total += full
        rows.append({"batch_size": bs, "steps": steps, "seconds": result.train_seconds, "samples_per_second": rate,
                     "full_minutes": full / 60})  # fmt: skip
        print(
            f"bs {bs:>3}: {steps} steps in {result.train_seconds:.1f} s, {rate:,.0f} samples/s → {full / 60:.0f} min for 100 epochs"
        )
    summary = (
        f"Paper scale (synthetic: {data.subjects.shape[0]:,} subjects, {n_features:,} phenotypes, {n_train:,} training "
        f"subjects; MLP {n_features}-256-128-32; 100 epochs; 6 seeds stacked per batch size): about "
        f"**{total / 3600:.1f} h of training on one core** for the 36 grid points (extrapolated from a timed "
        f"part of each batch size; evaluation and start-up not included)."
    )
    print(summary)
    from importlib.metadata import version

    out = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "torch": version("torch"),
           "date": dt.date.today().isoformat(), "command": "python benchmarks/paper_scale.py", "summary": summary,
           "n_train": n_train, "n_features": n_features, "total_hours_one_core": total / 3600, "rows": rows}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "paper_scale.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
