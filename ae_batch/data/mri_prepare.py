"""MRI cohort → prepared dataset: MONAI-preprocessed volumes, sex (if known), laterality, splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ae_batch.config import SplitsConfig
from ae_batch.data.labels import encode_sex
from ae_batch.data.mri import MriInputs, check_mri_inputs, load_mri_volumes
from ae_batch.data.prepared import PreparedDataset
from ae_batch.data.splits import make_splits


def mri_input_options(entry: dict[str, Any], name: str) -> dict[str, Any]:
    """The keyword arguments of ``check_mri_inputs`` / ``load_mri_cohort`` for a dataset entry."""
    return {
        "path": entry["path"],
        "layout": entry.get("layout", "auto"),
        "modality": str(entry.get("modality", "t1")),
        "subjects_csv": entry.get("subjects"),
        "spatial_size": tuple(entry.get("spatial_size", (32, 32, 32))),
        "id_column": entry.get("id_column", "subject_id"),
        "sex_column": entry.get("sex_column", "sex"),
        "dataset": name,
    }


def check_mri_dataset(
    entry: dict[str, Any], name: str = "mri"
) -> tuple[MriInputs, pd.Series, dict[str, int]]:
    """Everything ``build_mri_dataset`` checks before reading voxels: inputs, headers and the sex column."""
    inputs = check_mri_inputs(**mri_input_options(entry, name))
    sex, mapping = mri_sex(inputs)
    return inputs, sex, mapping


def mri_sex(inputs: MriInputs) -> tuple[pd.Series, dict[str, int]]:
    """Sex encoded 0/1 (NaN where unknown; all NaN without a source) and the mapping of raw values."""
    n = len(inputs.subjects)
    if inputs.sex is None or not inputs.sex.notna().any():
        return pd.Series(np.full(n, np.nan)), {}
    where = inputs.sex_where
    return encode_sex(
        inputs.sex.reset_index(drop=True),
        f"{inputs.sex_file}: column '{inputs.sex_column}'",
        inputs.subject_ids,
        lambda i: where[i] or "",
    )


def build_mri_dataset(entry: dict[str, Any], splits: SplitsConfig, name: str = "mri") -> PreparedDataset:
    """Volumes ``[N, 1, X, Y, Z]`` in [0, 1] (sigmoid output), split stratified by sex where known.

    Without sex labels (BraTS ships none) the split is stratified by tumour side instead.
    """
    inputs, sex, sex_mapping = check_mri_dataset(entry, name)  # all of it before any voxel is read
    cohort = load_mri_volumes(inputs, str(entry.get("modality", "t1")), entry.get("subjects"))
    laterality = np.asarray(cohort.laterality, dtype=float)
    strata = sex.tolist() if sex.notna().any() else np.sign(np.nan_to_num(laterality)).tolist()
    split = make_splits(cohort.subject_ids, strata, splits.val_fraction, splits.test_fraction, splits.seed)
    subjects = pd.DataFrame(
        {
            "subject_id": cohort.subject_ids,
            "split": split.to_numpy(),
            "sex": sex.to_numpy(dtype=float),
            "laterality": laterality,
        }
    )
    meta = {
        **cohort.meta,
        "kind": "mri",
        "activation": "sigmoid",
        "binary_features": False,
        "sex_mapping": sex_mapping,
        "fitted_on": "nothing: every preprocessing step is per volume",
    }
    return PreparedDataset(features=cohort.volumes, subjects=subjects, meta=meta)
