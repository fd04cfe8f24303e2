"""Building train-group specs for tests (the format ``ae_batch.grid.group_spec`` writes)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ae_batch.config import ModelConfig, ProtocolConfig
from ae_batch.io import write_json
from ae_batch.stages.init import init_model

MODEL = ModelConfig(kind="mlp", hidden_dims=(16,), latent_dim=4)
TRAINING = {"optimizer": "adam", "weight_decay": 0.0, "loss": "mse", "eval_batch_size": 256}


def make_spec(
    root: Path,
    prepared: Path,
    batch_size: int,
    members: list[tuple[int, float]],
    protocol: ProtocolConfig | None = None,
    model: ModelConfig = MODEL,
    group_id: str = "g0123456789",
    dataset: str = "ehr",
    **training: Any,
) -> Path:
    """Write a group spec for ``members`` [(seed, learning rate)] under ``root``; return its path.

    Initial states are made with ``init_model`` (one per seed, shared by the seed's learning rates)."""
    protocol = protocol or ProtocolConfig("paper", "epochs", epochs=3)
    tuned = len({lr for _, lr in members}) > 1 or protocol.lr == "tuned"
    cell = root / "results" / dataset / protocol.name / f"bs{batch_size}"
    entries = []
    for seed, lr in members:
        init = root / "results" / dataset / "init" / f"seed{seed}.pt"
        if not init.exists():
            init_model(prepared, init, seed, model)
        name = f"seed{seed}-lr{lr!r}" if tuned else f"seed{seed}"
        entries.append(
            {"name": name, "seed": seed, "learning_rate": lr, "tuned": tuned, "fingerprint": f"fp-{name}",
             "dir": str(cell / name), "init": str(init)}
        )  # fmt: skip
    spec = {
        "id": group_id,
        "dataset": dataset,
        "protocol": asdict(protocol),
        "batch_size": batch_size,
        "members": entries,
        "model": asdict(model),
        "training": {**TRAINING, **training},
        "prepared": str(prepared),
        "cell_dir": str(cell),
    }
    path = cell / "groups" / f"{group_id}.spec.json"
    write_json(path, spec)
    return path
