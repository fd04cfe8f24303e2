"""Stage ``init``: one initial state per dataset × seed, shared byte-for-byte by every batch size and
protocol (and every learning rate of a tuned grid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ae_batch.config import ModelConfig
from ae_batch.data.prepared import load_prepared
from ae_batch.io import file_sha256, save_torch
from ae_batch.models.factory import build_model

CODEBOOK_INIT_SUBJECTS = 64


def init_model(prepared_dir: str | Path, out_path: str | Path, seed: int, model: ModelConfig) -> str:
    """Build the model with ``torch.manual_seed(seed)``, save its state dict; return the file's sha256.

    A VQ codebook is seeded from data (k-means++ over encoder outputs) here, once, from the first
    ``CODEBOOK_INIT_SUBJECTS`` **training** subjects: a lazy first-batch init would see 1 volume at batch
    size 1 and 100 at 100, and validation or test subjects must never shape the model.
    """
    data = load_prepared(prepared_dir, mmap=True)
    torch.manual_seed(seed)
    net = build_model(model, data.input_shape, data.meta.get("activation", "sigmoid"))
    if hasattr(net, "initialise_codebook"):
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
