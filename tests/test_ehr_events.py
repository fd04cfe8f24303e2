"""Events + subjects + code map → binary subject × phenotype matrix (``build_events_dataset``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ae_batch.config import SplitsConfig
from ae_batch.data.ehr import build_events_dataset
from ae_batch.errors import DataError

SPLITS = SplitsConfig()

# A hand-made cohort of 10 subjects (5 F, 5 M). The default splits give 6 train / 2 val / 2 test, so a
# phenotype present in at least 5 subjects is present in at least one training subject whatever the split.
IDS = [f"{i:03d}" for i in range(1, 11)]
SEX = ["F", "M"] * 5
CODE_MAP = pd.DataFrame(
    {
        "ICD9": ["250.0", "250.1", "401.1", "174.0", "185", "530.81"],
        "PheCode": ["250", "250", "401.1", "174", "185", "530"],
        "sex": ["", "", "", "Female", "Male", ""],
    }
)
# subject index (0-based) → codes
EVENTS_OF = {
    0: ["250.0", "250.1", "250.0", "174.0"],  # 250 via two codes and a repeat → still a single 1
    1: ["250.1", "401.1", "185"],
    2: ["250.0", "174.0", "999.9"],  # 999.9 is not in the map
    3: ["401.1", "185", "401.1"],
    4: ["250.0", "401.1", "174.0"],
    5: ["250.1", "185"],
    6: ["250.0", "174.0", "401.1"],
    7: ["401.1", "185"],
    8: ["250.1", "174.0", "401.1"],
    9: ["185"],  # 401.1: 7 subjects, 250: 7, 174: 5 (all F), 185: 5 (all M); 530 never occurs
}
EXPECTED_250 = [1, 1, 1, 0, 1, 1, 1, 0, 1, 0]
EXPECTED_401 = [0, 1, 0, 1, 1, 0, 1, 1, 1, 0]
EXPECTED_174 = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
EXPECTED_185 = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]


def write_cohort(
    directory: Path,
    events_of: dict[int, list[str]] | None = None,
    ids: list[str] | None = None,
    sex: list[str] | None = None,
    code_map: pd.DataFrame | None = None,
    suffix: str = ".csv",
) -> dict[str, str]:
    ids = IDS if ids is None else ids
    sex = SEX if sex is None else sex
    events_of = EVENTS_OF if events_of is None else events_of
    code_map = CODE_MAP if code_map is None else code_map
    directory.mkdir(parents=True, exist_ok=True)
    events = pd.DataFrame(
        [(ids[i], code) for i, codes in events_of.items() for code in codes], columns=["subject_id", "code"]
    )
    subjects = pd.DataFrame({"subject_id": ids, "sex": sex})
    paths = {}
    for name, frame in (("events", events), ("subjects", subjects), ("code_map", code_map)):
        path = directory / f"{name}{suffix}"
        if suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        paths[name] = str(path)
    return paths


def entry_for(make_entry: Any, paths: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return make_entry({"kind": "events", **paths, **overrides}, Path(paths["events"]).parent)


def column(data: Any, phenotype: str) -> list[int]:
    return data.features[:, data.meta["feature_names"].index(phenotype)].astype(int).tolist()


def test_hand_made_cohort_gives_the_exact_matrix(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path)
    data = build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert data.features.dtype == np.float32
    assert data.meta["feature_names"] == ["250", "401.1"]  # sorted; restricted 174/185 dropped
    expected = np.array([EXPECTED_250, EXPECTED_401], dtype=np.float32).T
    np.testing.assert_array_equal(data.features, expected)
    assert list(data.subjects["subject_id"]) == IDS  # rows in subjects-file order
    assert list(data.subjects["sex"]) == [0.0, 1.0] * 5
    assert data.meta["sex_mapping"] == {"F": 0, "M": 1}
    assert data.meta["sex_restricted_phenotypes"] == ["174", "185"]
    assert data.meta["kept_sex_restricted"] is False
    assert data.meta["n_events"] == sum(len(v) for v in EVENTS_OF.values())
    assert data.meta["n_unmapped_events"] == 1
    assert data.meta["activation"] == "sigmoid" and data.meta["binary_features"] is True
    assert sorted(data.subjects["split"].value_counts().to_dict().items()) == [
        ("test", 2),
        ("train", 6),
        ("val", 2),
    ]


def test_keep_sex_restricted_keeps_them(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path)
    data = build_events_dataset(entry_for(make_entry, paths, min_count=1, keep_sex_restricted=True), SPLITS)
    assert data.meta["feature_names"] == ["174", "185", "250", "401.1"]
    assert column(data, "174") == EXPECTED_174
    assert column(data, "185") == EXPECTED_185
    assert column(data, "250") == EXPECTED_250
    assert data.meta["kept_sex_restricted"] is True


def test_small_synthetic_cohort_binary_and_shape(small_ehr_cohort: Any, make_events_entry: Any) -> None:
    data = build_events_dataset(make_events_entry(small_ehr_cohort), SPLITS)
    truth = small_ehr_cohort.truth
    assert data.features.shape[0] == 300
    assert set(np.unique(data.features)) <= {0.0, 1.0}
    restricted = {p for p, r in zip(truth["phecodes"], truth["restriction"], strict=True) if r}
    assert not restricted & set(data.meta["feature_names"])
    assert set(data.meta["sex_restricted_phenotypes"]) <= restricted
    # every column equals the ground-truth indicator for that phenotype
    col_of = {p: j for j, p in enumerate(truth["phecodes"])}
    for j, phen in enumerate(data.meta["feature_names"]):
        np.testing.assert_array_equal(data.features[:, j], truth["has"][:, col_of[phen]].astype(np.float32))
    # and every kept phenotype is present in at least min_count=5 training subjects
    train = data.mask("train")
    assert (data.features[train].sum(axis=0) >= 5).all()


def test_min_count_counts_training_subjects_only(tmp_path: Path, make_entry: Any) -> None:
    # 20 subjects: 12 train, 3 val, 5 test. Find the split first (it depends only on ids and sex).
    ids = [f"s{i:02d}" for i in range(20)]
    sex = ["F", "M"] * 10
    probe = write_cohort(tmp_path / "probe", {i: ["250.0"] for i in range(20)}, ids=ids, sex=sex)
    split = build_events_dataset(entry_for(make_entry, probe, min_count=1), SPLITS).subjects
    split = dict(zip(split["subject_id"], split["split"], strict=True))
    train = [i for i, s in enumerate(ids) if split[s] == "train"]
    other = [i for i, s in enumerate(ids) if split[s] != "train"]
    assert len(train) == 12 and len(other) == 8

    events_of: dict[int, list[str]] = {i: ["250.0"] for i in range(20)}  # everyone: always kept
    for i in other:
        events_of[i].append("401.1")  # 8 subjects, none in train → dropped at any min_count
    events_of[train[0]].append("530.81")  # 530: 1 train + 8 others → dropped at min_count 2
    for i in other:
        events_of[i].append("530.81")
    events_of[train[1]].append("185")  # 185 has no restriction in this map: exactly 2 train subjects
    events_of[train[2]].append("185")
    unrestricted = CODE_MAP.assign(sex="")
    paths = write_cohort(tmp_path / "real", events_of, ids=ids, sex=sex, code_map=unrestricted)

    at2 = build_events_dataset(entry_for(make_entry, paths, min_count=2), SPLITS)
    assert at2.meta["feature_names"] == ["185", "250"]
    assert at2.meta["dropped_rare_phenotypes"] == 2  # 401.1 and 530
    at3 = build_events_dataset(entry_for(make_entry, paths, min_count=3), SPLITS)
    assert at3.meta["feature_names"] == ["250"]
    at1 = build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert at1.meta["feature_names"] == ["185", "250", "530"]  # 401.1 (test/val only) still dropped
    with pytest.raises(DataError, match="min_count=21"):
        build_events_dataset(entry_for(make_entry, paths, min_count=21), SPLITS)


@pytest.mark.parametrize(
    ("female", "male"),
    [
        ("Female", "Male"),
        ("F", "M"),
        ("female", "male"),
        (" FEMALE ", "MALE"),
        ("women", "men"),
        ("woman", "man"),
    ],
)
def test_code_map_sex_spellings(tmp_path: Path, make_entry: Any, female: str, male: str) -> None:
    code_map = CODE_MAP.assign(sex=["", "", "", female, male, ""])
    paths = write_cohort(tmp_path, code_map=code_map)
    data = build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert data.meta["feature_names"] == ["250", "401.1"]
    assert data.meta["sex_restricted_phenotypes"] == ["174", "185"]


def test_code_map_without_sex_column_restricts_nothing(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path, code_map=CODE_MAP.drop(columns="sex"))
    data = build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert data.meta["feature_names"] == ["174", "185", "250", "401.1"]
    assert data.meta["sex_restricted_phenotypes"] == []


def test_leading_zeros_make_different_subjects(tmp_path: Path, make_entry: Any) -> None:
    ids = ["007", "7", "07", *[f"x{i}" for i in range(7)]]
    events_of = {i: ["250.0"] for i in range(1, 10)}  # everyone but "007" has 250
    events_of[0] = ["401.1"]  # "007" has only 401.1
    for i in range(3, 8):
        events_of[i] = ["250.0", "401.1"]
    paths = write_cohort(tmp_path, events_of, ids=ids)
    data = build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert list(data.subjects["subject_id"][:3]) == ["007", "7", "07"]
    assert column(data, "250")[:3] == [0, 1, 1]
    assert column(data, "401.1")[:3] == [1, 0, 0]


def test_parquet_inputs_give_the_same_result(tmp_path: Path, make_entry: Any) -> None:
    csv = build_events_dataset(entry_for(make_entry, write_cohort(tmp_path / "c"), min_count=1), SPLITS)
    pq = write_cohort(tmp_path / "p", suffix=".parquet")
    data = build_events_dataset(entry_for(make_entry, pq, min_count=1), SPLITS)
    np.testing.assert_array_equal(data.features, csv.features)
    assert data.meta["feature_names"] == csv.meta["feature_names"]
    assert list(data.subjects["subject_id"]) == IDS
    assert list(data.subjects["split"]) == list(csv.subjects["split"])


def test_parquet_integer_ids_match_text_ids_in_events(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path, ids=[str(i) for i in range(10)])
    subjects_pq = tmp_path / "subjects.parquet"
    pd.DataFrame({"subject_id": range(10), "sex": SEX}).to_parquet(subjects_pq, index=False)
    data = build_events_dataset(
        entry_for(make_entry, {**paths, "subjects": str(subjects_pq)}, min_count=1), SPLITS
    )
    assert list(data.subjects["subject_id"]) == [str(i) for i in range(10)]
    assert column(data, "250") == EXPECTED_250


def test_custom_column_names(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path)
    for name, renames in (
        ("events", {"subject_id": "pid", "code": "icd"}),
        ("subjects", {"subject_id": "pid", "sex": "gender"}),
        ("code_map", {"ICD9": "icd9", "PheCode": "phe", "sex": "restrict"}),
    ):
        pd.read_csv(paths[name], dtype=str).rename(columns=renames).to_csv(paths[name], index=False)
    entry = entry_for(
        make_entry,
        paths,
        min_count=1,
        id_column="pid",
        code_column="icd",
        sex_column="gender",
        map_code_column="icd9",
        map_phenotype_column="phe",
        map_sex_column="restrict",
    )
    data = build_events_dataset(entry, SPLITS)
    assert data.meta["feature_names"] == ["250", "401.1"]
    assert column(data, "401.1") == EXPECTED_401


# --- errors: DataError naming the file, column or subject -------------------------------------------


def _rewrite(path: str, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("missing", ["subject_id", "sex"])
def test_missing_subjects_column(tmp_path: Path, make_entry: Any, missing: str) -> None:
    paths = write_cohort(tmp_path)
    _rewrite(paths["subjects"], pd.read_csv(paths["subjects"], dtype=str).drop(columns=missing))
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert missing in str(info.value) and paths["subjects"] in str(info.value)


def test_missing_events_code_column(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path)
    _rewrite(paths["events"], pd.read_csv(paths["events"], dtype=str).rename(columns={"code": "icd"}))
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert "'code'" in str(info.value) and paths["events"] in str(info.value)


def test_missing_code_map_column(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path, code_map=CODE_MAP.rename(columns={"PheCode": "phecode"}))
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert "PheCode" in str(info.value) and paths["code_map"] in str(info.value)


def test_sex_with_three_values(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path, sex=["F", "M", "U"] + ["F", "M"] * 3 + ["F"])
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    message = str(info.value)
    assert "'sex'" in message and paths["subjects"] in message and "found 3" in message
    assert message.endswith("found 3: F, M, U; subject 003 (line 4) has 'U'")


def test_missing_sex_value_names_the_subject(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path, sex=["F", "M", ""] + ["F", "M"] * 3 + ["F"])
    with pytest.raises(DataError, match=r"column 'sex' has no value for subject 003 \(line 4\)"):
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)


def test_duplicate_subject_ids(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path, ids=[*IDS[:9], "003"])
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert str(info.value).startswith(paths["subjects"])
    assert "subject id 003 appears twice (lines 4 and 11)" in str(info.value)


def test_events_for_unknown_subject(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path)
    events = pd.read_csv(paths["events"], dtype=str)
    events.loc[len(events)] = ["0042", "250.0"]
    _rewrite(paths["events"], events)
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    message = str(info.value)
    assert message.startswith(
        f"{paths['events']}: column 'subject_id': subject 0042 (line {len(events) + 1})"
    )
    assert paths["subjects"] in message


@pytest.mark.parametrize("content", ["", "subject_id,code\n"], ids=["zero-bytes", "header-only"])
def test_empty_events_file(tmp_path: Path, make_entry: Any, content: str) -> None:
    paths = write_cohort(tmp_path)
    Path(paths["events"]).write_text(content)
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert paths["events"] in str(info.value)
    assert "empty" in str(info.value) or "no rows" in str(info.value)


def test_missing_file(tmp_path: Path, make_entry: Any) -> None:
    paths = write_cohort(tmp_path)
    Path(paths["code_map"]).unlink()
    with pytest.raises(DataError) as info:
        build_events_dataset(entry_for(make_entry, paths, min_count=1), SPLITS)
    assert "not found" in str(info.value) and paths["code_map"] in str(info.value)


# --- the prepared on-disk contract ------------------------------------------------------------------


def test_prepare_stage_round_trip_keeps_text_ids(tmp_path: Path, make_entry: Any) -> None:
    from ae_batch.data.prepared import load_prepared
    from ae_batch.errors import ConfigError
    from ae_batch.stages.prepare import prepare_dataset

    ids = ["007", "7", *[f"z{i}" for i in range(8)]]
    entry = entry_for(make_entry, write_cohort(tmp_path / "raw", ids=ids), min_count=1)
    out = tmp_path / "prepared"
    built = prepare_dataset("ehr", entry, SPLITS, out, max_batch_size=6)
    assert sorted(p.name for p in out.iterdir()) == ["features.npy", "meta.json", "subjects.csv"]
    loaded = load_prepared(out)
    assert list(loaded.subjects["subject_id"]) == ids  # "007" stays "007"
    assert list(loaded.subjects["split"]) == list(built.subjects["split"])
    np.testing.assert_array_equal(loaded.features, built.features)
    contract = loaded.meta["input_contract"]
    assert contract["shape"] == [2] and contract["dtype"] == "float32"
    assert contract["n_subjects"] == {"train": 6, "val": 2, "test": 2}
    assert (contract["min"], contract["max"]) == (0.0, 1.0)
    assert loaded.meta["dataset"] == "ehr" and loaded.meta["fitted_on"] == "train"
    with pytest.raises(ConfigError, match="batch_sizes: 7 is larger than the 6 training subjects"):
        prepare_dataset("ehr", entry, SPLITS, tmp_path / "p2", max_batch_size=7)
