"""Stage ``noise_init``: the gradient noise scale B_simple of every seed's initial state, per dataset.

B_simple = tr(Σ)/|G|² of the training loss over the training split (McCandlish et al. 2018): below it,
a larger batch mostly saves optimizer steps; far above it, it mostly spends more samples for the same
progress. The metric-vs-batch-size figures draw it as a vertical line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ae_batch.config import ModelConfig, NoiseScaleConfig
from ae_batch.data.prepared import load_prepared
from ae_batch.io import write_csv

COLUMNS = [
    "dataset", "protocol", "batch_size", "seed", "point", "grad_sq_norm", "trace_cov",
    "gradient_noise_scale", "method",
]  # fmt: skip


def noise_at_init(
    prepared_dir: str | Path,
    init_paths: Sequence[str | Path],
    seeds: Sequence[int],
    out_path: str | Path,
    dataset: str,
    model: ModelConfig,
    loss: str,
    noise: NoiseScaleConfig,
    threads: int = 1,
) -> pd.DataFrame:
    import torch

    from ae_batch.evaluation.noise_scale import autoencoder_loss, noise_scale
    from ae_batch.models.factory import load_model

    torch.set_num_threads(threads)
    data = load_prepared(prepared_dir)
    x = torch.from_numpy(np.asarray(data.split_features("train")))
    rows = []
    for seed, path in zip(seeds, init_paths, strict=True):
        net = load_model(path, model, data.input_shape, data.meta.get("activation", "sigmoid"))
        ns = noise_scale(
            net,
            x,
            autoencoder_loss(loss),
            noise.method,
            seed=int(seed),
            max_exact_cost=noise.max_exact_cost,
            chunk_size=64,
        )
        rows.append(
            {
                "dataset": dataset,
                "protocol": "",
                "batch_size": pd.NA,
                "seed": int(seed),
                "point": "init",
                "grad_sq_norm": ns.grad_sq_norm,
                "trace_cov": ns.trace_cov,
                "gradient_noise_scale": ns.gradient_noise_scale,
                "method": ns.method,
            }
        )
        print(
            f"{dataset} seed {seed}: B_simple at init = {ns.gradient_noise_scale:.4g} ({ns.method})",
            file=sys.stderr,
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(out_path, table)
    return table
