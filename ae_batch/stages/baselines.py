"""Stage ``baselines``: the same downstream CV on raw prepared features and on PCA of the latent's width.

PCA is fitted on training subjects only and applied to the test subjects, whose representations then go
through exactly the probes the latents go through. Its number of components is the width of the latent
it is compared with (32 for the MLP and conv AE, 2 × embedding_dim for the VQ-VAE). MRI volumes are
average-pooled to ``RAW_GRID`` voxels first ("downsampled raw voxels") so the probe stays well-posed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from ae_batch.config import DownstreamConfig, ModelConfig
from ae_batch.data.prepared import load_prepared
from ae_batch.evaluation.downstream import downstream_folds, fold_summary
from ae_batch.io import write_csv, write_json

RAW_GRID = (8, 8, 8)


def raw_representation(features: np.ndarray) -> np.ndarray:
    """Feature vectors as they are; volumes ``[N, C, X, Y, Z]`` average-pooled to ``RAW_GRID``."""
    if features.ndim == 2:
        return np.asarray(features, dtype=np.float64)
    import torch
    from torch.nn import functional as F  # noqa: N812

    pooled = F.adaptive_avg_pool3d(torch.as_tensor(np.asarray(features)), RAW_GRID)
    return pooled.flatten(1).numpy().astype(np.float64)


def latent_width(model: ModelConfig, input_shape: tuple[int, ...], activation: str) -> int:
    from ae_batch.models.factory import build_model

    return int(build_model(model, input_shape, activation).latent_dim)


def compute_baselines(
    prepared_dir: str | Path,
    out_dir: str | Path,
    dataset: str,
    model: ModelConfig,
    downstream: DownstreamConfig,
) -> dict[str, Any]:
    data = load_prepared(prepared_dir)
    train_x = raw_representation(data.split_features("train"))
    test_x = raw_representation(data.split_features("test"))
    test_subjects = data.split_subjects("test")
    width = latent_width(model, data.input_shape, data.meta.get("activation", "sigmoid"))
    n_components = min(width, train_x.shape[0], train_x.shape[1])
    pca = PCA(n_components=n_components, random_state=0).fit(train_x)  # training subjects only
    representations = {"raw": test_x, f"pca{n_components}": pca.transform(test_x)}
    rows, folds = [], []
    for name, rep in representations.items():
        f = downstream_folds(rep, test_subjects, downstream, f"{dataset} baseline {name}")
        rows.append(
            {"dataset": dataset, "representation": name, "n_features": rep.shape[1], **fold_summary(f)}
        )
        folds.append(f.assign(dataset=dataset, representation=name))
    out = Path(out_dir)
    write_csv(out / "baseline_folds.csv", pd.concat(folds, ignore_index=True))
    write_json(out / "baselines.json", {"dataset": dataset, "rows": rows})
    return {"rows": rows}
