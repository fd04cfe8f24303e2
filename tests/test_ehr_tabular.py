"""A one-row-per-subject table → imputed, scaled numeric + one-hot categorical features (train-fitted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ae_batch.config import SplitsConfig
from ae_batch.data.ehr import build_tabular_dataset
from ae_batch.errors import DataError

SPLITS = SplitsConfig()
N = 20
IDS = [f"{i:03d}" for i in range(N)]
SEX = ["F", "M"] * (N // 2)


def split_of(tmp_path: Path, make_entry: Any) -> pd.Series:
    """The split of each subject of a 20-row table (it depends only on ids, sex and splits.seed)."""
    frame = pd.DataFrame({"subject_id": IDS, "sex": SEX, "x": np.arange(N, dtype=float)})
    path = tmp_path / "probe.csv"
    frame.to_csv(path, index=False)
    data = build_tabular_dataset(make_entry({"kind": "tabular", "path": str(path)}, tmp_path), SPLITS)
    return pd.Series(data.subjects["split"].to_numpy(), index=IDS)


def base_table(split: pd.Series) -> pd.DataFrame:
    """Known values; missing values placed in train rows, an unseen level in a test row."""
    rng = np.random.default_rng(0)
    train_rows = np.flatnonzero(split.to_numpy() == "train")
    test_rows = np.flatnonzero(split.to_numpy() == "test")
    frame = pd.DataFrame(
        {
            "subject_id": IDS,
            "sex": SEX,
            "x": rng.normal(50, 10, N).round(2),
            "y": rng.integers(0, 5, N).astype(float),
            "smoking": rng.choice(["never", "former", "current"], N).astype(object),
            "site_code": rng.choice([1, 2, 3], N),
            "notes_id": np.arange(N) + 1000,
            "late_lab": np.nan,
        }
    )
    frame.loc[train_rows[:2], "x"] = np.nan  # two train NaNs → imputed with the train median
    frame.loc[test_rows[0], "x"] = np.nan
    frame.loc[train_rows[2], "smoking"] = None  # missing category in train → its own level
    frame.loc[test_rows[1], "smoking"] = "vaping"  # unseen in train → all zeros
    frame.loc[test_rows, "late_lab"] = 1.5  # only test subjects have this lab → dropped
    frame["site_code"] = frame["site_code"].astype(int)
    return frame


def build(tmp_path: Path, make_entry: Any, frame: pd.DataFrame, name: str = "t.csv", **extra: Any) -> Any:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    entry = make_entry({"kind": "tabular", "path": str(path), **extra}, tmp_path)
    return build_tabular_dataset(entry, SPLITS)


@pytest.fixture
def table(tmp_path: Path, make_entry: Any) -> tuple[pd.DataFrame, pd.Series]:
    split = split_of(tmp_path, make_entry)
    return base_table(split), split


def feature(data: Any, name: str) -> np.ndarray:
    return data.features[:, data.meta["feature_names"].index(name)]


def test_imputation_scaling_one_hot_values(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, split = table
    data = build(tmp_path, make_entry, frame, categorical_columns=["site_code"], drop_columns=["notes_id"])
    train = (split == "train").to_numpy()
    assert list(data.subjects["split"]) == list(split)
    assert data.meta["feature_names"] == [
        "x",
        "y",
        "smoking=__missing__",
        "smoking=current",
        "smoking=former",
        "smoking=never",
        "site_code=1",
        "site_code=2",
        "site_code=3",
    ]
    assert data.features.dtype == np.float32 and data.features.shape == (N, 9)
    # numeric: median imputation, then standardisation, all with train statistics (population std)
    x = frame["x"].to_numpy()
    median = np.nanmedian(x[train])
    filled = np.where(np.isnan(x), median, x)
    mean, std = filled[train].mean(), filled[train].std()
    fitted = data.meta["fitted"]["numeric"]["x"]
    assert fitted["median"] == pytest.approx(median)
    assert fitted["mean"] == pytest.approx(mean)
    assert fitted["std"] == pytest.approx(std)
    np.testing.assert_allclose(feature(data, "x"), (filled - mean) / std, rtol=1e-5, atol=1e-5)
    assert feature(data, "x")[train].mean() == pytest.approx(0.0, abs=1e-5)
    assert feature(data, "x")[train].std() == pytest.approx(1.0, abs=1e-5)
    # the test subject with a missing x gets the TRAIN median, scaled
    test_nan = np.flatnonzero(np.isnan(x) & ~train)[0]
    assert feature(data, "x")[test_nan] == pytest.approx((median - mean) / std, abs=1e-5)
    # one-hot: categorical missing is its own level, unseen test level is all zeros
    onehot = data.features[:, 2:6]
    smoking = frame["smoking"].fillna("__missing__").to_numpy()
    unseen = smoking == "vaping"
    assert unseen.sum() == 1 and not train[unseen].any()
    np.testing.assert_array_equal(onehot[unseen], np.zeros((1, 4)))
    assert (onehot[~unseen].sum(axis=1) == 1).all()
    for j, level in enumerate(["__missing__", "current", "former", "never"]):
        np.testing.assert_array_equal(onehot[~unseen, j], (smoking[~unseen] == level).astype(np.float32))
    assert data.meta["fitted"]["categorical"]["smoking"] == ["__missing__", "current", "former", "never"]
    # an integer column listed as categorical is one-hot, not scaled
    np.testing.assert_array_equal(
        data.features[:, 6:9], np.eye(3, dtype=np.float32)[frame["site_code"].to_numpy() - 1]
    )
    assert data.meta["fitted"]["categorical"]["site_code"] == ["1", "2", "3"]
    # dropped / excluded columns
    assert "notes_id" not in " ".join(data.meta["feature_names"])
    assert "subject_id" not in data.meta["feature_names"] and "sex" not in data.meta["feature_names"]
    assert data.meta["dropped_columns"] == {"late_lab": "no value in any training subject"}
    assert data.meta["activation"] == "identity" and data.meta["binary_features"] is False


def test_numeric_column_not_listed_is_scaled_when_not_dropped(
    tmp_path: Path, make_entry: Any, table: Any
) -> None:
    frame, _ = table
    data = build(tmp_path, make_entry, frame)
    assert "notes_id" in data.meta["feature_names"]
    assert "site_code" in data.meta["fitted"]["numeric"]  # integers are numeric unless listed


def test_constant_train_column_gets_unit_std(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, split = table
    frame = frame.assign(const=np.where(split.to_numpy() == "train", 3.0, 7.0))
    data = build(tmp_path, make_entry, frame)
    assert data.meta["fitted"]["numeric"]["const"] == {"median": 3.0, "mean": 3.0, "std": 1.0}
    np.testing.assert_allclose(feature(data, "const"), np.where(split == "train", 0.0, 4.0))


@pytest.mark.parametrize(
    ("values", "mapping"),
    [
        (["F", "M"], {"F": 0, "M": 1}),
        (["M", "F"], {"F": 0, "M": 1}),
        ([1, 2], {"1": 0, "2": 1}),
        (["female", "male"], {"female": 0, "male": 1}),
        (["Male", "Female"], {"Female": 0, "Male": 1}),
    ],
)
def test_sex_mapping_is_recorded(
    tmp_path: Path, make_entry: Any, table: Any, values: list[Any], mapping: dict[str, int]
) -> None:
    frame, _ = table
    frame = frame.assign(sex=values * (N // 2))
    data = build(tmp_path, make_entry, frame)
    assert data.meta["sex_mapping"] == mapping
    expected = [float(mapping[str(v)]) for v in values * (N // 2)]
    assert list(data.subjects["sex"]) == expected


def test_numeric_column_with_junk_text_raises(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, split = table
    frame["x"] = frame["x"].astype(object)
    row = np.flatnonzero(split.to_numpy() == "train")[3]
    frame.loc[row, "x"] = "<0.5"  # a train row
    with pytest.raises(DataError) as info:
        build(tmp_path, make_entry, frame)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "t.csv"))
    assert f"column 'x' is numeric but subject {IDS[row]} (line {row + 2}) has text '<0.5'" in message
    # listing it as categorical is the documented way out
    data = build(tmp_path, make_entry, frame, categorical_columns=["x"])
    assert "x=<0.5" in data.meta["feature_names"]
    assert "x" in data.meta["fitted"]["categorical"] and "x" not in data.meta["fitted"]["numeric"]


def test_text_column_is_categorical(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, _ = table
    data = build(tmp_path, make_entry, frame)
    assert "smoking" in data.meta["fitted"]["categorical"]


def test_unknown_listed_columns_raise(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, _ = table
    with pytest.raises(DataError, match="nope"):
        build(tmp_path, make_entry, frame, drop_columns=["nope"])
    with pytest.raises(DataError, match="nah"):
        build(tmp_path, make_entry, frame, categorical_columns=["nah"])


def test_no_feature_columns_left_raises(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, _ = table
    with pytest.raises(DataError, match="no feature columns"):
        build(tmp_path, make_entry, frame[["subject_id", "sex", "x"]], drop_columns=["x"])


def test_parquet_table_matches_csv(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, _ = table
    csv = build(tmp_path, make_entry, frame, categorical_columns=["site_code"])
    pq = build(tmp_path, make_entry, frame, name="t.parquet", categorical_columns=["site_code"])
    assert pq.meta["feature_names"] == csv.meta["feature_names"]
    np.testing.assert_allclose(pq.features, csv.features, atol=1e-6)


def test_no_leakage_from_val_and_test_subjects(tmp_path: Path, make_entry: Any, table: Any) -> None:
    frame, split = table
    extra = {"categorical_columns": ["site_code"], "drop_columns": ["notes_id"]}
    before = build(tmp_path, make_entry, frame, **extra)

    held_out = (split != "train").to_numpy()
    rng = np.random.default_rng(99)
    changed = frame.copy()
    changed.loc[held_out, "x"] = rng.normal(500, 100, held_out.sum()).round(2)
    changed.loc[held_out, "y"] = 1000.0
    changed.loc[held_out, "smoking"] = "heavy"
    changed.loc[held_out, "site_code"] = 9
    changed.loc[held_out, "late_lab"] = rng.normal(size=held_out.sum())
    after = build(tmp_path, make_entry, changed, name="changed.csv", **extra)

    assert after.meta["fitted"] == before.meta["fitted"]
    assert after.meta["feature_names"] == before.meta["feature_names"]
    assert after.meta["dropped_columns"] == before.meta["dropped_columns"]
    train = ~held_out
    np.testing.assert_array_equal(after.features[train], before.features[train])
    assert not np.array_equal(after.features[held_out], before.features[held_out])  # sanity: data changed


def test_synthetic_tabular_file(small_ehr_cohort: Any, make_entry: Any) -> None:
    entry = make_entry({"kind": "tabular", "path": str(small_ehr_cohort.tabular)}, small_ehr_cohort.directory)
    data = build_tabular_dataset(entry, SPLITS)
    names = data.meta["feature_names"]
    assert {"age", "bmi", "sbp", "hba1c", "hemoglobin", "n_phenotypes"} <= set(names)
    assert {"site=A", "site=B", "site=C", "smoking=__missing__"} <= set(names)
    assert not np.isnan(data.features).any()
    train = data.mask("train")
    numeric = [names.index(c) for c in ("age", "bmi", "sbp")]
    np.testing.assert_allclose(data.features[train][:, numeric].mean(axis=0), 0.0, atol=1e-5)
