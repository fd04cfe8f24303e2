"""MRI cohort → prepared dataset: MONAI-preprocessed volumes, sex (if known), laterality, splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ae_batch.config import SplitsConfig
from ae_batch.data.labels import encode_sex
from ae_batch.data.mri import load_mri_cohort
from ae_batch.data.prepared import PreparedDataset
from ae_batch.data.splits import make_splits


def build_mri_dataset(entry: dict[str, Any], splits: SplitsConfig, name: str = "mri") -> PreparedDataset:
    """Volumes ``[N, 1, X, Y, Z]`` in [0, 1] (sigmoid output), split stratified by sex where known.

    Without sex labels (BraTS ships none) the split is stratified by tumour side instead.
    """
    cohort = load_mri_cohort(
        entry["path"],
        layout=entry.get("layout", "auto"),
        modality=str(entry.get("modality", "t1")),
        subjects_csv=entry.get("subjects"),
        spatial_size=tuple(entry.get("spatial_size", (32, 32, 32))),
        id_column=entry.get("id_column", "subject_id"),
        sex_column=entry.get("sex_column", "sex"),
    )
    n = len(cohort.subject_ids)
    sex = pd.Series(np.full(n, np.nan))
    sex_mapping: dict[str, int] = {}
    source = entry.get("subjects") or entry["path"]
    if cohort.sex is not None and cohort.sex.notna().any():
        sex, sex_mapping = encode_sex(
            cohort.sex.reset_index(drop=True), f"subjects of dataset '{name}' ({source})"
        )
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
