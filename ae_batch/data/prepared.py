"""The on-disk contract between ``prepare`` and every later stage.

``results/<study>/<dataset>/prepared/`` holds:

- ``features.npy``: float32 ``[N, ...]`` model inputs, one row per subject in ``subjects.csv`` order
  (``[N, D]`` for EHR, ``[N, 1, X, Y, Z]`` for MRI).
- ``subjects.csv``: ``subject_id`` (text), ``split`` (train/val/test), ``sex`` (0/1, empty if unknown) and
  optional labels such as ``laterality``. Labels are never model inputs.
- ``meta.json``: kind, feature names, output activation, the sex mapping, what was dropped and why, and the
  input contract (shape, dtype, value range) that training and MLflow record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ae_batch.io import read_json, write_csv, write_json, write_npy

SPLITS = ("train", "val", "test")


@dataclass
class PreparedDataset:
    features: np.ndarray
    subjects: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.features) != len(self.subjects):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.subjects)} subjects")
        missing = {"subject_id", "split"} - set(self.subjects.columns)
        if missing:
            raise ValueError(f"subjects table lacks columns {sorted(missing)}")

    def mask(self, split: str) -> np.ndarray:
        return (self.subjects["split"] == split).to_numpy()

    def split_features(self, split: str) -> np.ndarray:
        return self.features[self.mask(split)]

    def split_subjects(self, split: str) -> pd.DataFrame:
        return self.subjects[self.mask(split)].reset_index(drop=True)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.features.shape[1:])

    def input_contract(self) -> dict[str, Any]:
        train = self.split_features("train")
        return {
            "shape": list(self.input_shape),
            "dtype": str(self.features.dtype),
            "min": float(train.min()) if train.size else None,
            "max": float(train.max()) if train.size else None,
            "n_subjects": {s: int(self.mask(s).sum()) for s in SPLITS},
        }


def save_prepared(directory: str | Path, data: PreparedDataset) -> None:
    directory = Path(directory)
    features = np.ascontiguousarray(data.features, dtype=np.float32)
    meta = {**data.meta, "input_contract": PreparedDataset(features, data.subjects).input_contract()}
    write_npy(directory / "features.npy", features)
    write_csv(directory / "subjects.csv", data.subjects)
    write_json(directory / "meta.json", meta)


def load_prepared(directory: str | Path, mmap: bool = False) -> PreparedDataset:
    directory = Path(directory)
    features = np.load(directory / "features.npy", mmap_mode="r" if mmap else None)
    subjects = pd.read_csv(directory / "subjects.csv", dtype={"subject_id": str, "split": str})
    return PreparedDataset(features=features, subjects=subjects, meta=read_json(directory / "meta.json"))
