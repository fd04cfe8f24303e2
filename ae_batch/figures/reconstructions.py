"""MRI reconstruction figure: the same test subjects, mid slices, original vs reconstruction.

Subjects are labelled by their position among the test subjects, never by id, because the figure is
logged to MLflow (a wider audience than the results folder).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ae_batch.figures.common import save_figure

PLANES = ("axial", "coronal", "sagittal")
N_SUBJECTS = 4
RECON_DPI = 100


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Axial (z), coronal (y) and sagittal (x) mid slices of a RAS ``[X, Y, Z]`` volume, display-oriented."""
    x, y, z = (s // 2 for s in volume.shape)
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]


def reconstructions_figure(originals: np.ndarray, reconstructions: np.ndarray, title: str) -> plt.Figure:
    """``originals``/``reconstructions``: ``[N, 1, X, Y, Z]``; the first ``N_SUBJECTS`` are shown."""
    n = min(N_SUBJECTS, len(originals))
    fig, axes = plt.subplots(n, 6, figsize=(12, 2.1 * n + 0.4), squeeze=False)
    for i in range(n):
        pairs = zip(mid_slices(originals[i, 0]), mid_slices(reconstructions[i, 0]), strict=True)
        for j, (orig, rec) in enumerate(pairs):
            for k, (img, kind) in enumerate(((orig, "original"), (rec, "reconstruction"))):
                ax = axes[i, 2 * j + k]
                ax.imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{PLANES[j]}\n{kind}", fontsize=8)
            if j == 0:
                axes[i, 0].set_ylabel(f"test subject {i + 1}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_reconstructions(
    originals: np.ndarray, reconstructions: np.ndarray, title: str, out_path: str | Path
) -> Path:
    """Write ``reconstructions_figure`` as a PNG (atomically, no metadata) and return its path."""
    return save_figure(reconstructions_figure(originals, reconstructions, title), out_path, dpi=RECON_DPI)
