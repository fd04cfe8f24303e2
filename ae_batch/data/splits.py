"""Subject-level train/val/test splits: the one place splits are made.

Splits depend only on the subject list, the stratification labels and ``splits.seed`` (never on a
training seed), so every batch size and every training seed sees the same subjects in the same split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ae_batch.errors import DataError


def make_splits(
    subject_ids: Sequence[str],
    strata: Sequence[object] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> pd.Series:
    """Return a Series (index = subject id, value = train/val/test), stratified by ``strata`` if given.

    Subjects with a missing stratum (NaN) are split without stratification alongside the others.
    """
    ids = pd.Index([str(s) for s in subject_ids], name="subject_id")
    # Splits depend on the set of subjects, not on the row order of the input file.
    if ids.has_duplicates:
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise DataError(f"duplicate subject ids: {dup}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"splits.val_fraction ({val_fraction}) and splits.test_fraction ({test_fraction}) must be in (0, 1) "
            "and sum to less than 1"
        )
    n = len(ids)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    if n - n_test - n_val < 2:
        raise DataError(f"only {n} subjects: too few for a train/val/test split")
    order = np.argsort(ids.to_numpy(dtype=str), kind="stable")
    labels = None
    if strata is not None:
        labels = pd.Series(list(strata), index=ids).astype(object)
        labels = labels.where(labels.notna(), "__missing__").astype(str).to_numpy()[order]
        counts = pd.Series(labels).value_counts()
        # Stratify only where every stratum can appear in every split; else a plain random split.
        if counts.min() < 3 or min(n_test, n_val) < len(counts):
            labels = None
    positions = np.arange(n)
    rest, test = train_test_split(positions, test_size=n_test, random_state=seed, stratify=labels)
    rest_labels = None if labels is None else labels[rest]
    if rest_labels is not None and pd.Series(rest_labels).value_counts().min() < 2:
        rest_labels = None
    train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1, stratify=rest_labels)
    split = np.empty(n, dtype=object)
    split[order[train]], split[order[val]], split[order[test]] = "train", "val", "test"
    return pd.Series(split, index=ids, name="split")
