"""Stage ``init``: one initial state per dataset × seed, shared byte-for-byte by every batch size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ae_batch.config import ModelConfig
from ae_batch.data.prepared import load_prepared
from ae_batch.io import save_torch
from ae_batch.models.factory import build_model

CODEBOOK_INIT_SUBJECTS = 64


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def init_model(prepared_dir: str | Path, out_path: str | Path, seed: int, model: ModelConfig) -> str:
    """Build the model with ``torch.manual_seed(seed)``, save its state dict; return the file's sha256."""
    data = load_prepared(prepared_dir, mmap=True)
    torch.manual_seed(seed)
    net = build_model(model, data.input_shape, data.meta.get("activation", "sigmoid"))
    if hasattr(net, "initialise_codebook"):
        # A VQ codebook seeded from data must not depend on the batch size (a lazy first-batch init would
        # see 1 volume at batch size 1 and 128 at 128): seed it here from a fixed set of training subjects.
        fixed = torch.from_numpy(np.asarray(data.split_features("train")[:CODEBOOK_INIT_SUBJECTS]))
        with torch.no_grad():
            net.initialise_codebook(fixed)
    payload = {
        "state_dict": net.state_dict(),
        "seed": seed,
        "model": model.__dict__,
        "input_shape": data.input_shape,
    }
    save_torch(out_path, payload)
    return file_sha256(out_path)


def load_initial_model(
    init_path: str | Path, model: ModelConfig, input_shape: tuple[int, ...], activation: str
):
    """Rebuild the model and load the saved initial state (the same bytes for every batch size)."""
    payload = torch.load(init_path, map_location="cpu", weights_only=False)
    net = build_model(model, input_shape, activation)
    net.load_state_dict(payload["state_dict"])
    return net
