"""Stage ``init``: one initial state per dataset × seed, shared byte-for-byte by every batch size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ae_batch.config import ModelConfig
from ae_batch.data.prepared import load_prepared
from ae_batch.io import atomic_path
from ae_batch.models.factory import build_model


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def init_model(prepared_dir: str | Path, out_path: str | Path, seed: int, model: ModelConfig) -> str:
    """Build the model with ``torch.manual_seed(seed)``, save its state dict; return the file's sha256."""
    data = load_prepared(prepared_dir, mmap=True)
    torch.manual_seed(seed)
    net = build_model(model, data.input_shape, data.meta.get("activation", "sigmoid"))
    payload = {
        "state_dict": net.state_dict(),
        "seed": seed,
        "model": model.__dict__,
        "input_shape": data.input_shape,
    }
    with atomic_path(out_path) as tmp:
        torch.save(payload, tmp)
    return file_sha256(out_path)


def load_initial_model(
    init_path: str | Path, model: ModelConfig, input_shape: tuple[int, ...], activation: str
):
    """Rebuild the model and load the saved initial state (the same bytes for every batch size)."""
    payload = torch.load(init_path, map_location="cpu", weights_only=False)
    net = build_model(model, input_shape, activation)
    net.load_state_dict(payload["state_dict"])
    return net
