"""Training throughput: stacked members (ae_batch) vs a minimal hand-written loop, one model at a time.

For each case (model, batch size, K members) three things train the same data from the same initial
weights in the same (seed, epoch) shuffle order, with 1 torch thread:

* ``stacked``: ``ae_batch.training.loop.fit_group``, K members as one stacked model under Lightning
  (validation at epoch ends, as in the pipeline; its time is excluded as in ``train_seconds``);
* ``loop``: ``ae_batch.training.reference.train_alone`` with torch's default Adam, no validation;
* ``fused loop``: the same loop with the fused Adam kernel.

A loop trains one model at a time, so its aggregate throughput is its single-model samples/s. Ratios
are measured side by side in one run: best of N interleaved repeats. Subnormal floats are flushed to
zero for all three (as ``ae-batch train`` does): sparse inputs otherwise push Adam's moments into
subnormal arithmetic, ~100x slower on x86, and the comparison would measure that instead.

    python benchmarks/train_throughput.py                     # the issue's five cases, 3 repeats
    python benchmarks/train_throughput.py --device cuda       # on a GPU
    python benchmarks/train_throughput.py --quick             # fewer samples, a smoke check

Writes ``benchmarks/results/<name>.json`` (machine, torch version, date, every figure);
``benchmarks/readme_table.py`` turns it into the README's table.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ae_batch.config import ModelConfig, ProtocolConfig
from ae_batch.models.factory import build_model
from ae_batch.training.loop import fit_group
from ae_batch.training.protocols import budget_for
from ae_batch.training.reference import train_alone

RESULTS = Path(__file__).resolve().parent / "results"
# (model, batch size, members, target ÷ plain loop, target ÷ fused loop): the table.
CASES = [
    ("ehr_mlp", 1, 3, 2.5, 1.5),
    ("ehr_mlp", 1, 6, 3.0, 1.8),
    ("ehr_mlp", 32, 6, 2.0, 1.3),
    ("mri_conv", 1, 3, 1.5, 1.3),
    ("mri_conv", 16, 6, 1.3, 1.2),
]


def data(name: str, device: str, size: int) -> tuple[torch.Tensor, Any]:
    g = torch.Generator().manual_seed(0)
    if name == "ehr_mlp":  # the default study's EHR shape: 1,200 training subjects × ~290 binary phenotypes
        x = (torch.rand(1200, 290, generator=g) < 0.14).float()
        return x.to(device), lambda: build_model(ModelConfig(kind="mlp"), (290,), "sigmoid")
    x = torch.rand(120, 1, size, size, size, generator=g)  # the MRI arm: 120 training volumes
    return x.to(device), lambda: build_model(ModelConfig(kind="conv"), (1, size, size, size), "sigmoid")


def measure(
    name: str, bs: int, k: int, samples: int, repeats: int, device: str, size: int
) -> dict[str, float]:
    x, make = data(name, device, size)
    val = x[: min(64, len(x))]
    epochs = max(1, -(-max(samples, 20 * bs) // len(x)))
    budget = budget_for(ProtocolConfig("bench", "epochs", epochs=epochs), bs, len(x))
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(make())
    best = {"stacked": 0.0, "loop": 0.0, "fused_loop": 0.0}
    accelerator = "gpu" if device == "cuda" else "cpu"
    for _ in range(repeats):  # interleaved: background load hits all three alike
        result = fit_group(models[0], [m.state_dict() for m in models], x, val, list(range(k)), [1e-3] * k,
                           budget, accelerator=accelerator)  # fmt: skip
        best["stacked"] = max(best["stacked"], k * result.samples / result.train_seconds)
        for key, fused in (("loop", False), ("fused_loop", True)):
            model = copy.deepcopy(models[0]).to(device)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_alone(model, x, val, 0, budget, 1e-3, fused=fused, validate=False)
            if device == "cuda":
                torch.cuda.synchronize()
            best[key] = max(best[key], result.samples / (time.perf_counter() - start))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--mri-size", type=int, default=32, help="MRI volume edge (the issue's table: 32)")
    p.add_argument("--name", default=None, help="results file name (default: cpu<N> or the GPU's name)")
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    machine = (
        torch.cuda.get_device_name()
        if a.device == "cuda"
        else f"{os.cpu_count()}-core {platform.machine()} CPU"
    )
    print(
        f"torch {torch.__version__} on {machine}, {a.threads} thread(s), best of {a.repeats} interleaved repeats"
    )
    rows = []
    for name, bs, k, target_plain, target_fused in CASES:
        per_case = {"ehr_mlp": 6000, "mri_conv": 480}[name] // (4 if a.quick else 1)
        best = measure(
            name, bs, k, per_case * (20 if a.device == "cuda" else 1), a.repeats, a.device, a.mri_size
        )
        row = {"model": name, "batch_size": bs, "members": k, **best,
               "ratio_loop": best["stacked"] / best["loop"], "ratio_fused_loop": best["stacked"] / best["fused_loop"],
               "target_loop": target_plain, "target_fused_loop": target_fused}  # fmt: skip
        row["met"] = row["ratio_loop"] >= target_plain and row["ratio_fused_loop"] >= target_fused
        rows.append(row)
        print(f"{name:<9} bs {bs:>3} K {k}: stacked {best['stacked']:>8.0f}/s  loop {best['loop']:>7.0f}/s  "
              f"fused loop {best['fused_loop']:>7.0f}/s  ÷loop {row['ratio_loop']:.2f} (≥{target_plain})  "
              f"÷fused {row['ratio_fused_loop']:.2f} (≥{target_fused})", flush=True)  # fmt: skip
    out = {
        "machine": machine,
        "device": a.device,
        "threads": a.threads,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": dt.date.today().isoformat(),
        "repeats": a.repeats,
        "mri_size": a.mri_size,
        "command": " ".join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
        "cases": rows,
    }
    name = a.name or (f"cpu{os.cpu_count()}" if a.device == "cpu" else "gpu")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
