"""Peak resident memory of a train job against the number of stacked members K (MRI conv AE, batch 16).

Each K runs in a fresh process (``ru_maxrss`` is a high-water mark): the prepared data, the stacked model
and optimizer, and one epoch of training, as ``ae-batch train`` does.

    python benchmarks/train_memory.py     → benchmarks/results/train_memory.json
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CHILD = """
import resource, sys, torch, warnings
warnings.filterwarnings("ignore")
from ae_batch.config import ModelConfig, ProtocolConfig
from ae_batch.models.factory import build_model
from ae_batch.training.loop import fit_group
from ae_batch.training.protocols import budget_for
k, size = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
x = torch.rand(120, 1, size, size, size, generator=torch.Generator().manual_seed(0))
models = []
for seed in range(k):
    torch.manual_seed(seed)
    models.append(build_model(ModelConfig(kind="conv"), (1, size, size, size), "sigmoid"))
budget = budget_for(ProtocolConfig("p", "epochs", epochs=1), 16, 120)
fit_group(models[0], [m.state_dict() for m in models], x, x[:30], list(range(k)), [1e-3] * k, budget)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    rows, base = [], None
    for k in (1, 2, 4, 6):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(k), str(size)], capture_output=True, text=True, check=True
        )
        rss = float(out.stdout.strip().splitlines()[-1])
        base = rss if base is None else base
        rows.append({"model": f"MRI conv AE {size}³, batch 16", "members": k, "peak_rss_mb": rss,
                     "per_member_mb": (rss - base) / (k - 1) if k > 1 else 0.0})  # fmt: skip
        print(f"K={k}: peak RSS {rss:,.0f} MB")
    from importlib.metadata import version

    result = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "torch": version("torch"),
              "date": dt.date.today().isoformat(), "command": "python benchmarks/train_memory.py", "rows": rows}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_memory.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
