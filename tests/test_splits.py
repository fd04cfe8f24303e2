"""Subject-level stratified train/val/test splits (``make_splits``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ae_batch.data.splits import make_splits
from ae_batch.errors import DataError

N = 1000
IDS = [f"{i:04d}" for i in range(N)]
# 30% male, in blocks, so an unstratified positional split could not match proportions by accident
SEX = [1.0 if i % 10 < 3 else 0.0 for i in range(N)]


def test_deterministic_for_a_seed() -> None:
    a = make_splits(IDS, SEX, 0.15, 0.25, seed=3)
    b = make_splits(list(IDS), list(SEX), 0.15, 0.25, seed=3)
    pd.testing.assert_series_equal(a, b)
    assert list(a.index) == IDS and a.index.name == "subject_id"
    assert set(a) == {"train", "val", "test"}


def test_different_seed_differs() -> None:
    a = make_splits(IDS, SEX, 0.15, 0.25, seed=3)
    b = make_splits(IDS, SEX, 0.15, 0.25, seed=4)
    assert (a != b).mean() > 0.2


def test_fractions_are_respected() -> None:
    split = make_splits(IDS, SEX, 0.15, 0.25, seed=0)
    assert split.value_counts().to_dict() == {"train": 600, "test": 250, "val": 150}
    split = make_splits(IDS[:97], SEX[:97], 0.1, 0.2, seed=0)
    assert split.value_counts().to_dict() == {"train": 68, "test": 19, "val": 10}


def test_stratified_by_sex() -> None:
    split = make_splits(IDS, SEX, 0.15, 0.25, seed=0)
    sex = pd.Series(SEX, index=IDS)
    overall = sex.mean()
    for part in ("train", "val", "test"):
        assert abs(sex[split == part].mean() - overall) < 0.02, part


def test_missing_strata_are_split_too() -> None:
    strata = [np.nan if i % 7 == 0 else s for i, s in enumerate(SEX)]
    split = make_splits(IDS, strata, 0.15, 0.25, seed=0)
    assert split.value_counts().to_dict() == {"train": 600, "test": 250, "val": 150}
    missing = split[[i % 7 == 0 for i in range(N)]]
    assert set(missing) == {"train", "val", "test"}


def test_tiny_stratum_falls_back_to_random_split() -> None:
    sex = [0.0] * 18 + [1.0] * 2  # a stratum of 2 cannot be stratified
    split = make_splits([str(i) for i in range(20)], sex, 0.15, 0.25, seed=0)
    assert split.value_counts().to_dict() == {"train": 12, "test": 5, "val": 3}


def test_ids_are_text() -> None:
    split = make_splits([7, 8, 9, 10, 11, 12, 13, 14], None, 0.25, 0.25, seed=0)
    assert list(split.index) == ["7", "8", "9", "10", "11", "12", "13", "14"]


def test_split_does_not_depend_on_the_input_row_order() -> None:
    """A re-sorted subjects file must not move anyone to another split (ids are sorted first)."""
    order = np.random.default_rng(0).permutation(N)
    shuffled = make_splits([IDS[i] for i in order], [SEX[i] for i in order], 0.15, 0.25, seed=0)
    original = make_splits(IDS, SEX, 0.15, 0.25, seed=0)
    assert shuffled.value_counts().to_dict() == original.value_counts().to_dict()
    assert (shuffled.reindex(original.index) == original).all()


def test_duplicate_ids_raise() -> None:
    with pytest.raises(DataError, match="duplicate subject ids.*'0003'"):
        make_splits([*IDS[:10], "0003"], None, 0.15, 0.25, seed=0)


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.2, 1.0), (0.5, 0.5), (-0.1, 0.2)])
def test_bad_fractions_raise(val: float, test: float) -> None:
    with pytest.raises(DataError, match="val_fraction"):
        make_splits(IDS, SEX, val, test, seed=0)


def test_too_few_subjects_raise() -> None:
    with pytest.raises(DataError, match="too few"):
        make_splits(["a", "b", "c"], None, 0.3, 0.3, seed=0)


@pytest.mark.parametrize(
    ("n", "strata"),
    [
        pytest.param(6, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0], id="6-subjects-3F-3M"),
        pytest.param(12, [0.0] * 4 + [1.0] * 4 + [np.nan] * 4, id="12-subjects-some-sex-unknown"),
    ],
)
def test_small_cohorts_split_or_raise_data_error(n: int, strata: list[float]) -> None:
    ids = [f"s{i}" for i in range(n)]
    try:
        split = make_splits(ids, strata, 0.15, 0.25, seed=0)
    except DataError:
        return  # a clear, user-facing error is acceptable too
    n_test, n_val = max(1, round(n * 0.25)), max(1, round(n * 0.15))
    assert split.value_counts().to_dict() == {"train": n - n_test - n_val, "test": n_test, "val": n_val}
