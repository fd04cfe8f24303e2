"""The fast pre-job data check (``ae_batch.data.checks``): every bad input it must catch, caught both by the
check and by ``prepare``, with a message naming file, column, subject, line and value; and its cache."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ae_batch.config import SplitsConfig
from ae_batch.data import checks
from ae_batch.data.checks import check_dataset, check_dataset_cached
from ae_batch.errors import DataError
from ae_batch.stages.prepare import build_dataset

SPLITS = SplitsConfig()
N = 30  # enough training subjects that one text value in a numeric column is junk, not a category
IDS = [f"P{i:04d}" for i in range(N)]  # IDS[i] sits on CSV line i + 2
SEX = ["F", "M"] * (N // 2)

# The two code paths every bad input must fail on.
PATHS: dict[str, Callable[[str, dict[str, Any]], Any]] = {
    "check": lambda name, entry: check_dataset(name, entry, SPLITS),
    "prepare": lambda name, entry: build_dataset(name, entry, SPLITS),
}


def events_entry(d: Path, **overrides: Any) -> dict[str, Any]:
    """A fully specified events entry (the schema's defaults written out)."""
    return {
        "kind": "events",
        "events": str(d / "events.csv"),
        "subjects": str(d / "subjects.csv"),
        "code_map": str(d / "code_map.csv"),
        "id_column": "subject_id",
        "code_column": "code",
        "age_column": "age",
        "sex_column": "sex",
        "map_code_column": "ICD9",
        "map_phenotype_column": "PheCode",
        "map_sex_column": "sex",
        "min_count": 1,
        "keep_sex_restricted": False,
        **overrides,
    }


def tabular_entry(path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "tabular",
        "path": str(path),
        "id_column": "subject_id",
        "sex_column": "sex",
        "categorical_columns": [],
        "drop_columns": [],
        **overrides,
    }


def write_ehr(d: Path, ids: list[str] | None = None, sex: list[str] | None = None) -> Path:
    ids = IDS if ids is None else ids
    sex = SEX if sex is None else sex
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"subject_id": ids, "sex": sex}).to_csv(d / "subjects.csv", index=False)
    codes = ["250.0", "401.1", "185"]
    events = [(sid, codes[j % 3]) for i, sid in enumerate(ids) for j in range(i % 3 + 1)]
    pd.DataFrame(events, columns=["subject_id", "code"]).to_csv(d / "events.csv", index=False)
    pd.DataFrame({"ICD9": codes, "PheCode": ["250", "401.1", "185"], "sex": ["", "", "Male"]}).to_csv(
        d / "code_map.csv", index=False
    )
    table = pd.DataFrame(
        {
            "subject_id": ids,
            "sex": sex,
            "bmi": np.round(np.linspace(18, 35, len(ids)), 1).astype(object),
            "age": np.arange(len(ids)) + 40,
        }
    )
    table.to_csv(d / "tabular.csv", index=False)
    return d


def fails(path: str, name: str, entry: dict[str, Any], *fragments: str) -> str:
    """Run one code path; it must raise DataError whose message holds every fragment; return the message."""
    with pytest.raises(DataError) as info:
        PATHS[path](name, entry)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    return message


# --- EHR: events + subjects + code map, and the wide table -----------------------------------------


def test_good_inputs_pass_with_a_summary(tmp_path: Path) -> None:
    d = write_ehr(tmp_path)
    events = check_dataset("ehr", events_entry(d), SPLITS)
    assert events == {
        "kind": "events",
        "n_subjects": N,
        "n_per_split": {"train": 18, "val": 4, "test": 8},
        "input_shape": [2],  # 185 is male-only: dropped
        "n_features": 2,
    }
    table = check_dataset("tab", tabular_entry(d / "tabular.csv"), SPLITS)
    assert table["kind"] == "tabular" and table["n_features"] == 2 and table["n_subjects"] == N


@pytest.mark.parametrize("path", PATHS)
def test_missing_column_suggests_the_close_one(tmp_path: Path, path: str) -> None:
    d = write_ehr(tmp_path)
    subjects = pd.read_csv(d / "subjects.csv", dtype=str).rename(columns={"sex": "Sex"})
    subjects.to_csv(d / "subjects.csv", index=False)
    message = fails(path, "ehr", events_entry(d), "'sex'", "datasets.ehr.sex_column", "did you mean 'Sex'?")
    assert message == (
        f"{d / 'subjects.csv'}: subjects file lacks column 'sex' (datasets.ehr.sex_column; "
        "did you mean 'Sex'?); found columns ['subject_id', 'Sex']"
    )


@pytest.mark.parametrize("path", PATHS)
def test_duplicate_column_in_the_header(tmp_path: Path, path: str) -> None:
    d = write_ehr(tmp_path)
    table = d / "tabular.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(f"{line},{line.split(',')[2]}" for line in lines) + "\n")  # bmi again
    message = fails(path, "tab", tabular_entry(table), str(table), "'bmi'", "columns 3 and 5")
    assert message == (
        f"{table}: table file has column 'bmi' more than once in its header (columns 3 and 5); "
        "pandas would silently rename the second to 'bmi.1': rename or remove one"
    )


@pytest.mark.parametrize("path", PATHS)
def test_config_names_a_column_the_file_lacks(tmp_path: Path, path: str) -> None:
    table = write_ehr(tmp_path) / "tabular.csv"
    message = fails(path, "tab", tabular_entry(table, drop_columns=["bmii"]), str(table), "'bmii'")
    assert message == (
        f"{table}: table file lacks column 'bmii' (named in datasets.tab.drop_columns; did you mean 'bmi'?); "
        "found columns ['subject_id', 'sex', 'bmi', 'age']"
    )
    fails(
        path, "tab", tabular_entry(table, categorical_columns=["smoking"]), "datasets.tab.categorical_columns"
    )
    fails(path, "tab", tabular_entry(table, id_column="eid"), "'eid'", "datasets.tab.id_column")


@pytest.mark.parametrize("path", PATHS)
def test_third_sex_value_names_a_subject_with_it(tmp_path: Path, path: str) -> None:
    sex = list(SEX)
    sex[7] = "X"  # P0007, line 9
    d = write_ehr(tmp_path, sex=sex)
    message = fails(path, "ehr", events_entry(d))
    assert message == (
        f"{d / 'subjects.csv'}: column 'sex': sex must have exactly two values; found 3: F, M, X; "
        "subject P0007 (line 9) has 'X'"
    )


def test_third_sex_value_in_the_table(tmp_path: Path) -> None:
    sex = list(SEX)
    sex[2], sex[9] = "male", "U"  # P0002 (line 4), P0009 (line 11)
    table = write_ehr(tmp_path, sex=sex) / "tabular.csv"
    for path in PATHS:
        message = fails(path, "tab", tabular_entry(table))
        assert message.startswith(f"{table}: column 'sex': sex must have exactly two values; found 4: ")
        assert "subject P0002 (line 4) has 'male'" in message and "subject P0009 (line 11) has 'U'" in message


@pytest.mark.parametrize("path", PATHS)
def test_duplicate_ids_name_both_lines(tmp_path: Path, path: str) -> None:
    ids = list(IDS)
    ids[9] = "P0003"  # lines 5 and 11
    d = write_ehr(tmp_path, ids=ids)
    message = fails(path, "ehr", events_entry(d))
    assert message == (
        f"{d / 'subjects.csv'}: column 'subject_id' of the subjects file: subject id P0003 appears twice "
        "(lines 5 and 11); each subject needs exactly one row"
    )


@pytest.mark.parametrize("path", PATHS)
def test_missing_id_names_the_line(tmp_path: Path, path: str) -> None:
    ids = list(IDS)
    ids[4] = ""
    d = write_ehr(tmp_path, ids=ids)
    message = fails(path, "ehr", events_entry(d))
    assert message == (
        f"{d / 'subjects.csv'}: column 'subject_id' has no subject id on line 6 (1 row(s) in all); "
        "every row needs one"
    )


@pytest.mark.parametrize("path", PATHS)
def test_text_in_a_numeric_column(tmp_path: Path, path: str) -> None:
    table = write_ehr(tmp_path) / "tabular.csv"
    frame = pd.read_csv(table, dtype=str)
    frame.loc[4, "bmi"] = "<0.5"  # P0004, line 6
    frame.to_csv(table, index=False)
    message = fails(path, "tab", tabular_entry(table))
    assert message == (
        f"{table}: column 'bmi' is numeric but subject P0004 (line 6) has text '<0.5'; "
        "fix the value or list 'bmi' in datasets.tab.categorical_columns"
    )


@pytest.mark.parametrize("path", PATHS)
def test_events_of_an_unknown_subject(tmp_path: Path, path: str) -> None:
    d = write_ehr(tmp_path)
    events = pd.read_csv(d / "events.csv", dtype=str)
    events.loc[len(events)] = ["P0099", "250.0"]
    events.loc[len(events)] = ["P0042", "250.0"]
    events.to_csv(d / "events.csv", index=False)
    line = len(events)  # the first unknown one: header + (len - 2) rows + 1
    message = fails(path, "ehr", events_entry(d))
    assert message == (
        f"{d / 'events.csv'}: column 'subject_id': subject P0099 (line {line}) is not in the subjects file "
        f"{d / 'subjects.csv'}; 2 unknown subject(s) in all: ['P0042', 'P0099']"
    )


@pytest.mark.parametrize("path", PATHS)
def test_missing_sex_value(tmp_path: Path, path: str) -> None:
    sex = list(SEX)
    sex[3] = ""  # P0003, line 5
    d = write_ehr(tmp_path, sex=sex)
    message = fails(path, "ehr", events_entry(d))
    assert message == (
        f"{d / 'subjects.csv'}: column 'sex' has no value for subject P0003 (line 5) (1 subject(s) in all); "
        "sex is needed for the split and the downstream classifier"
    )


def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    table = write_ehr(tmp_path) / "tabular.csv"
    lines = table.read_text().splitlines()
    lines[2] = lines[2].replace("P0001,M", 'P0001,"M"') + "\n"  # a blank line after P0001 (line 3)
    lines[3] = lines[3].replace(",F,", ',"F\n",')  # P0002's sex spans lines 5-6 (and strips to F)
    lines[5] = lines[5].replace("P0004,F,", "P0004,F,oops")  # P0004 starts on line 8
    table.write_text("\n".join(lines) + "\n")
    assert pd.read_csv(table, dtype=str)["subject_id"].tolist() == IDS  # pandas sees the same rows
    for path in PATHS:
        fails(path, "tab", tabular_entry(table), "subject P0004 (line 8) has text 'oops")


def test_parquet_rows_are_called_rows(tmp_path: Path) -> None:
    sex = list(SEX)
    sex[7] = "X"
    d = write_ehr(tmp_path, sex=sex)
    pq = d / "tabular.parquet"
    pd.read_csv(d / "tabular.csv", dtype={"subject_id": str}).to_parquet(pq, index=False)
    for path in PATHS:
        fails(path, "tab", tabular_entry(pq), str(pq), "subject P0007 (row 8) has 'X'")


@pytest.mark.parametrize("path", PATHS)
def test_missing_input_file(tmp_path: Path, path: str) -> None:
    d = write_ehr(tmp_path)
    (d / "code_map.csv").unlink()
    fails(path, "ehr", events_entry(d), str(d / "code_map.csv"), "not found")
    message = fails("check", "ehr", events_entry(d))
    assert message == f"{d / 'code_map.csv'}: code map file not found (config key 'datasets.ehr.code_map')"


def test_one_set_of_sex_words_for_sex_columns_and_code_maps(tmp_path: Path) -> None:
    from ae_batch.data import ehr, labels

    assert {"f", "female", "woman", "women", "w", "fem"} == labels.FEMALE_WORDS
    assert {"m", "male", "man", "men", "mal"} == labels.MALE_WORDS
    assert not hasattr(ehr, "_FEMALE_WORDS") and not hasattr(labels, "_FEMALE")
    assert [labels.sex_word(v) for v in (" Women", "FEM", "w", "Men", "mal", "x", None)] == [
        "female",
        "female",
        "female",
        "male",
        "male",
        "",
        "",
    ]
    # the code map's restriction column uses the same words: "Men" (only ehr.py knew it) and "fem"
    # (only labels.py knew it) both restrict
    d = write_ehr(tmp_path)
    pd.DataFrame(
        {"ICD9": ["250.0", "401.1", "185"], "PheCode": ["250", "401.1", "185"], "sex": ["fem", "", "Men"]}
    ).to_csv(d / "code_map.csv", index=False)
    data = build_dataset("ehr", events_entry(d), SPLITS)
    assert data.meta["feature_names"] == ["401.1"]
    assert data.meta["sex_restricted_phenotypes"] == ["185", "250"]


# --- MRI: discovery, subjects CSV, headers, sex; no voxel is read -------------------------------------

SHAPE = (16, 16, 16)


def _nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def write_mri(root: Path, n: int = 6, sex: list[str] | None = None) -> Path:
    """A tiny BraTS 2021 cohort (t1 + seg) with a subjects CSV outside the image folder."""
    rng = np.random.default_rng(0)
    for i in range(n):
        sid = f"BraTS2021_{i:05d}"
        data = np.zeros(SHAPE, np.float32)
        data[3:13, 3:13, 3:13] = rng.uniform(10, 100, (10, 10, 10))
        _nifti(root / "imgs" / sid / f"{sid}_t1.nii.gz", data)
        seg = np.zeros(SHAPE, np.uint8)
        seg[4:7, 6:9, 6:9] = 2
        _nifti(root / "imgs" / sid / f"{sid}_seg.nii.gz", seg)
    sex = sex or ["F", "M"] * (n // 2)
    pd.DataFrame({"subject_id": [f"BraTS2021_{i:05d}" for i in range(n)], "sex": sex}).to_csv(
        root / "subjects.csv", index=False
    )
    return root


def mri_entry(root: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "mri",
        "path": str(root / "imgs"),
        "layout": "auto",
        "modality": "t1",
        "subjects": str(root / "subjects.csv"),
        "id_column": "subject_id",
        "sex_column": "sex",
        "spatial_size": [8, 8, 8],
        **overrides,
    }


def _t1(root: Path, i: int) -> Path:
    sid = f"BraTS2021_{i:05d}"
    return root / "imgs" / sid / f"{sid}_t1.nii.gz"


@pytest.fixture()
def no_voxels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check must never read voxels: any voxel read or MONAI load fails the test."""
    import ae_batch.data.mri as mri

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check_dataset read voxels")

    monkeypatch.setattr(mri, "load_mri_volumes", refuse)
    monkeypatch.setattr(mri, "_read_image", refuse)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", refuse)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__getitem__", refuse)


def test_mri_check_passes_without_reading_voxels(tmp_path: Path, no_voxels: None) -> None:
    summary = check_dataset("mri", mri_entry(write_mri(tmp_path)), SPLITS)
    assert summary == {
        "kind": "mri",
        "n_subjects": 6,
        "n_per_split": {"train": 3, "val": 1, "test": 2},
        "input_shape": [1, 8, 8, 8],
        "n_features": None,
        "layout": "brats2021",
        "n_with_seg": 6,
        "n_with_sex": 6,
    }


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("keep", [200, 0.5], ids=["header-cut", "voxels-cut"])
def test_mri_truncated_file(tmp_path: Path, path: str, keep: float) -> None:
    root = write_mri(tmp_path)
    image = _t1(root, 1)
    blob = image.read_bytes()
    image.write_bytes(blob[: int(keep if keep > 1 else len(blob) * keep)])
    message = fails(path, "mri", mri_entry(root), str(image), "subject BraTS2021_00001")
    assert message.startswith(f"{image}: subject BraTS2021_00001: ")
    assert ("truncated" in message) or ("cannot read the NIfTI header" in message)


def test_mri_truncated_uncompressed_file(tmp_path: Path) -> None:
    root = write_mri(tmp_path)
    image = _t1(root, 2)
    plain = image.with_name(image.name.removesuffix(".gz"))
    _nifti(plain, np.asanyarray(nib.load(image).dataobj))
    image.unlink()
    plain.write_bytes(plain.read_bytes()[:-100])
    for path in PATHS:
        message = fails(path, "mri", mri_entry(root))
        assert message == (
            f"{plain}: subject BraTS2021_00002: file is truncated: {352 + 16**3 * 4 - 100} bytes where the "
            f"header promises {352 + 16**3 * 4} (header and voxels); re-download or re-export it"
        )


@pytest.mark.parametrize("path", PATHS)
def test_mri_4d_where_3d_expected(tmp_path: Path, path: str) -> None:
    root = write_mri(tmp_path)
    _nifti(_t1(root, 0), np.ones((*SHAPE, 4), np.float32))
    message = fails(path, "mri", mri_entry(root))
    assert message == (
        f"{_t1(root, 0)}: subject BraTS2021_00000: 4D image with 4 volumes where one 3D volume was expected: "
        "brats2021 keeps one 3D file per modality: set modality to one of t1, t1ce, t2, flair, "
        "or use layout msd/manifest"
    )


@pytest.mark.parametrize("path", PATHS)
def test_mri_subjects_csv_mismatch(tmp_path: Path, path: str) -> None:
    root = write_mri(tmp_path)
    csv = root / "subjects.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[2, "subject_id"] = "BraTS2021_00099"  # line 4: no image; BraTS2021_00002: no row
    frame.to_csv(csv, index=False)
    message = fails(path, "mri", mri_entry(root))
    assert message == (
        f"{csv}: the subjects CSV and the images disagree: 1 subject(s) in column 'subject_id' have no image "
        f"under {root / 'imgs'}: ['BraTS2021_00099'] (first: subject BraTS2021_00099, line 4); "
        f"1 subject(s) with images under {root / 'imgs'} have no row: ['BraTS2021_00002'] "
        f"(first: subject BraTS2021_00002, image {_t1(root, 2)})"
    )


@pytest.mark.parametrize("path", PATHS)
def test_mri_third_sex_value_and_missing_sex_column(tmp_path: Path, path: str) -> None:
    root = write_mri(tmp_path, sex=["F", "M", "X", "M", "F", "M"])
    csv = root / "subjects.csv"
    message = fails(path, "mri", mri_entry(root))
    assert message == (
        f"{csv}: column 'sex': sex must have exactly two values; found 3: F, M, X; "
        "subject BraTS2021_00002 (line 4) has 'X'"
    )
    pd.read_csv(csv, dtype=str).rename(columns={"sex": "gender"}).to_csv(csv, index=False)
    fails(path, "mri", mri_entry(root), str(csv), "lacks column 'sex' (datasets.mri.sex_column", "'gender'")


def test_mri_duplicate_ids_in_the_subjects_csv(tmp_path: Path) -> None:
    root = write_mri(tmp_path)
    csv = root / "subjects.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[len(frame)] = ["BraTS2021_00001", "M"]
    frame.to_csv(csv, index=False)
    for path in PATHS:
        fails(
            path, "mri", mri_entry(root), str(csv), "subject id BraTS2021_00001 appears twice (lines 3 and 8)"
        )


# --- the cache ------------------------------------------------------------------------------------


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every check that actually runs (the cached variant calls ``checks.check_dataset``)."""
    runs: list[str] = []
    real = checks.check_dataset

    def spy(name: str, entry: dict[str, Any], splits: SplitsConfig) -> dict[str, Any]:
        runs.append(name)
        return real(name, entry, splits)

    monkeypatch.setattr(checks, "check_dataset", spy)
    return runs


def _touch_later(path: Path) -> None:
    """Move the mtime on for sure (a rewrite within the file system's timestamp granularity may not)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_cache_hit_and_misses_events(
    tmp_path: Path, counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    d = write_ehr(project / "data")
    monkeypatch.chdir(project)
    cache = project / "results" / ".checks"
    entry = events_entry(d)
    first = check_dataset_cached("ehr", entry, SPLITS, cache)
    assert first["cached"] is False and counted == ["ehr"]
    again = check_dataset_cached("ehr", dict(entry), SPLITS, cache)
    assert again == {**first, "cached": True} and counted == ["ehr"]  # hit: the check did not run
    key = (cache / "ehr.json").read_text()
    assert str(project) not in key and "data/subjects.csv" in key  # portable paths only

    # training-only keys do not matter; data keys, splits and file contents do
    check_dataset_cached("ehr", {**entry, "model": {"latent_dim": 4}}, SPLITS, cache)
    assert counted == ["ehr"]
    check_dataset_cached("ehr", {**entry, "min_count": 2}, SPLITS, cache)
    assert counted == ["ehr"] * 2
    check_dataset_cached("ehr", {**entry, "min_count": 2}, SplitsConfig(seed=1), cache)
    assert counted == ["ehr"] * 3
    check_dataset_cached("ehr", {**entry, "min_count": 2}, SplitsConfig(seed=1), cache)
    assert counted == ["ehr"] * 3
    events = d / "events.csv"
    events.write_text(events.read_text().replace("401.1", "250.0"))  # same size, new content
    _touch_later(events)
    check_dataset_cached("ehr", {**entry, "min_count": 2}, SplitsConfig(seed=1), cache)
    assert counted == ["ehr"] * 4


def test_cache_is_not_written_for_a_failing_check(tmp_path: Path, counted: list[str]) -> None:
    sex = list(SEX)
    sex[0] = "X"
    d = write_ehr(tmp_path, sex=sex)
    for _ in range(2):
        with pytest.raises(DataError, match="found 3"):
            check_dataset_cached("ehr", events_entry(d), SPLITS, tmp_path / "cache")
    assert counted == ["ehr", "ehr"] and not (tmp_path / "cache" / "ehr.json").exists()
    (tmp_path / "subjects.csv").unlink()
    with pytest.raises(DataError, match=r"subjects file not found \(config key 'datasets.ehr.subjects'\)"):
        check_dataset_cached("ehr", events_entry(d), SPLITS, tmp_path / "cache")


def test_copied_project_still_hits_the_cache(
    tmp_path: Path, counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "a"
    write_ehr(project / "data")
    monkeypatch.chdir(project)
    entry = tabular_entry(Path("data") / "tabular.csv")
    absolute = tabular_entry(project / "data" / "tabular.csv")  # as resolve_config hands it over
    check_dataset_cached("tab", absolute, SPLITS, "results/.checks")
    check_dataset_cached("tab", entry, SPLITS, "results/.checks")  # relative and absolute: one key
    assert counted == ["tab"]
    copy = tmp_path / "b"
    shutil.copytree(project, copy)  # copy2 keeps the modification times
    monkeypatch.chdir(copy)
    check_dataset_cached("tab", tabular_entry(copy / "data" / "tabular.csv"), SPLITS, "results/.checks")
    assert counted == ["tab"]


def test_cache_mri_folder_listing(
    tmp_path: Path, counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_mri(tmp_path)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    entry = mri_entry(root)
    check_dataset_cached("mri", entry, SPLITS, cache)
    check_dataset_cached("mri", entry, SPLITS, cache)
    assert counted == ["mri"]
    _nifti(_t1(root, 3), np.ones((*SHAPE, 2), np.float32))  # a file below the folder changes
    with pytest.raises(DataError, match="4D image with 2 volumes"):
        check_dataset_cached("mri", entry, SPLITS, cache)
    assert counted == ["mri"] * 2
    _nifti(_t1(root, 3), np.full(SHAPE, 5, np.float32))
    check_dataset_cached("mri", entry, SPLITS, cache)
    extra = root / "imgs" / "BraTS2021_00005" / "notes.txt"  # a new file in the folder
    extra.write_text("x")
    check_dataset_cached("mri", entry, SPLITS, cache)
    check_dataset_cached("mri", entry, SPLITS, cache)
    assert counted == ["mri"] * 4
