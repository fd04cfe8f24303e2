"""EHR inputs → model features: ICD events → binary phenotype matrix, or a wide table → encoded features.

Every fitted step (phenotype vocabulary and ``min_count`` filter, imputation values, scaling, one-hot
vocabularies) is fitted on training subjects only; validation and test subjects are only transformed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ae_batch.config import SplitsConfig
from ae_batch.data.labels import encode_sex, sex_word
from ae_batch.data.prepared import PreparedDataset
from ae_batch.data.splits import make_splits
from ae_batch.data.tables import (
    clean_ids,
    locations,
    locator,
    missing_columns_error,
    read_table,
    require_columns,
    row_location,
    subject_at,
)
from ae_batch.errors import DataError

# A text column is "numeric with junk" (an error) rather than categorical when most values parse.
NUMERIC_JUNK_THRESHOLD = 0.9


def _subjects_with_splits(
    frame: pd.DataFrame,
    id_column: str,
    sex_column: str,
    what: str,
    path: str,
    splits: SplitsConfig,
    name: str,
) -> tuple[pd.DataFrame, dict[str, int]]:
    keys = {id_column: f"datasets.{name}.id_column", sex_column: f"datasets.{name}.sex_column"}
    require_columns(frame, [id_column, sex_column], what, path, keys)
    ids = clean_ids(frame, id_column, what, path)
    id_list = ids.tolist()
    sex, mapping = encode_sex(frame[sex_column], f"{path}: column '{sex_column}'", id_list, locator(path))
    missing = np.flatnonzero(sex.isna().to_numpy())
    if len(missing):
        shown = ", ".join(subject_at(path, id_list, i) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"{path}: column '{sex_column}' has no value for {shown}{more} "
            f"({len(missing)} subject(s) in all); sex is needed for the split and the downstream classifier"
        )
    split = make_splits(id_list, sex.tolist(), splits.val_fraction, splits.test_fraction, splits.seed)
    subjects = pd.DataFrame({"subject_id": ids.to_numpy(), "split": split.to_numpy(), "sex": sex.to_numpy()})
    return subjects, mapping


def build_events_dataset(
    entry: dict[str, Any], splits: SplitsConfig, name: str = "events"
) -> PreparedDataset:
    """Events + subjects + code map → binary subject × phenotype matrix (1 = ever had the phenotype)."""
    id_col, code_col, sex_col = entry["id_column"], entry["code_column"], entry["sex_column"]
    map_code, map_phen, map_sex = (
        entry["map_code_column"],
        entry["map_phenotype_column"],
        entry["map_sex_column"],
    )

    key = f"datasets.{name}"
    subjects_raw = read_table(entry["subjects"], "subjects", [id_col])
    subjects, sex_mapping = _subjects_with_splits(
        subjects_raw, id_col, sex_col, "subjects", entry["subjects"], splits, name
    )
    events = read_table(entry["events"], "events", [id_col, code_col])
    require_columns(
        events,
        [id_col, code_col],
        "events",
        entry["events"],
        {id_col: f"{key}.id_column", code_col: f"{key}.code_column"},
    )
    code_map = read_table(entry["code_map"], "code map", [map_code, map_phen])
    require_columns(
        code_map,
        [map_code, map_phen],
        "code map",
        entry["code_map"],
        {map_code: f"{key}.map_code_column", map_phen: f"{key}.map_phenotype_column"},
    )

    events = events[[id_col, code_col]].dropna().astype(str)
    events[id_col] = events[id_col].str.strip()
    events[code_col] = events[code_col].str.strip()
    unknown_rows = ~events[id_col].isin(set(subjects["subject_id"]))
    if unknown_rows.any():
        unknown = sorted(set(events.loc[unknown_rows, id_col]))
        first = int(events.index[unknown_rows.to_numpy()][0])
        raise DataError(
            f"{entry['events']}: column '{id_col}': subject {events.at[first, id_col]} "
            f"({row_location(entry['events'], first)}) is not in the subjects file {entry['subjects']}; "
            f"{len(unknown)} unknown subject(s) in all: {unknown[:5]}"
        )

    cmap = code_map[[map_code, map_phen]].dropna().astype(str)
    cmap = cmap.assign(**{map_code: cmap[map_code].str.strip(), map_phen: cmap[map_phen].str.strip()})
    if map_sex in code_map.columns:
        restriction = code_map[map_sex].map(sex_word).reindex(cmap.index)
    else:
        restriction = pd.Series("", index=cmap.index)
    phen_restriction = (
        pd.DataFrame({"phen": cmap[map_phen], "r": restriction}).groupby("phen")["r"].max().to_dict()
    )

    mapped = events.merge(cmap, left_on=code_col, right_on=map_code, how="inner")
    n_unmapped = int((~events[code_col].isin(set(cmap[map_code]))).sum())
    pairs = mapped[[id_col, map_phen]].drop_duplicates()

    train_ids = set(subjects.loc[subjects["split"] == "train", "subject_id"])
    train_counts = pairs[pairs[id_col].isin(train_ids)].groupby(map_phen)[id_col].nunique()
    kept = train_counts[train_counts >= entry["min_count"]].index
    dropped_rare = sorted(set(pairs[map_phen]) - set(kept))
    restricted = sorted(p for p in kept if phen_restriction.get(p, ""))
    if not entry.get("keep_sex_restricted", False):
        kept = kept.difference(restricted)
    phenotypes = sorted(kept)
    if not phenotypes:
        raise DataError(
            f"{entry['events']}: no phenotype is present in at least min_count="
            f"{entry['min_count']} training subjects; lower datasets.{name}.min_count"
        )

    row_of = {s: i for i, s in enumerate(subjects["subject_id"])}
    col_of = {p: j for j, p in enumerate(phenotypes)}
    pairs = pairs[pairs[map_phen].isin(col_of)]
    features = np.zeros((len(subjects), len(phenotypes)), dtype=np.float32)
    features[pairs[id_col].map(row_of).to_numpy(), pairs[map_phen].map(col_of).to_numpy()] = 1.0

    meta = {
        "kind": "events",
        "feature_names": phenotypes,
        "activation": "sigmoid",
        "binary_features": True,
        "sex_mapping": sex_mapping,
        "n_events": len(events),
        "n_unmapped_events": n_unmapped,
        "dropped_rare_phenotypes": len(dropped_rare),
        "sex_restricted_phenotypes": restricted,
        "kept_sex_restricted": bool(entry.get("keep_sex_restricted", False)),
        "min_count": entry["min_count"],
        "fitted_on": "train",
    }
    return PreparedDataset(features=features, subjects=subjects, meta=meta)


def _column_is_categorical(
    values: pd.Series, train: np.ndarray, col: str, path: str, name: str, ids: list[str]
) -> bool:
    """Numeric or categorical, decided on the training rows; junk text in a numeric column is an error.

    A text column whose values all parse as numbers (e.g. parquet strings) is numeric. One that mostly
    parses (≥ 90% of the training values) but holds some text is refused, naming the column, the first
    subject with text, its line and the value, since a typo would otherwise silently turn a lab value into
    a one-hot category.
    """
    if pd.api.types.is_numeric_dtype(values):
        return False
    text = values.astype("string").str.strip()
    present = text.notna() & (text != "")
    parses = pd.to_numeric(text.where(present), errors="coerce").notna()
    train_present = present.to_numpy() & train
    if train_present.sum() == 0:
        return True
    share = parses.to_numpy()[train_present].mean()
    if share < NUMERIC_JUNK_THRESHOLD:
        return True
    junk = np.flatnonzero((present & ~parses).to_numpy())
    if len(junk):
        first = int(junk[0])
        more = f" ({len(junk)} text values in all, on {locations(path, junk)})" if len(junk) > 1 else ""
        raise DataError(
            f"{path}: column '{col}' is numeric but {subject_at(path, ids, first)} has text "
            f"{text.iloc[first]!r}{more}; fix the value or list '{col}' in datasets.{name}.categorical_columns"
        )
    return False


def build_tabular_dataset(
    entry: dict[str, Any], splits: SplitsConfig, name: str = "tabular"
) -> PreparedDataset:
    """A one-row-per-subject table → imputed, scaled numeric + one-hot categorical features."""
    path, id_col, sex_col = entry["path"], entry["id_column"], entry["sex_column"]
    frame = read_table(path, "table", [id_col])
    subjects, sex_mapping = _subjects_with_splits(frame, id_col, sex_col, "table", path, splits, name)
    listed = {
        col: f"named in datasets.{name}.{key}"
        for key in ("drop_columns", "categorical_columns")
        for col in entry.get(key, [])
    }
    absent = [c for c in listed if c not in frame.columns]
    if absent:
        raise missing_columns_error(absent, list(frame.columns), "table", path, listed)
    ids = subjects["subject_id"].tolist()
    excluded = {id_col, sex_col, *entry.get("drop_columns", [])}
    listed_categorical = set(entry.get("categorical_columns", []))
    train = (subjects["split"] == "train").to_numpy()

    blocks: list[np.ndarray] = []
    names: list[str] = []
    fitted: dict[str, Any] = {"numeric": {}, "categorical": {}}
    dropped: dict[str, str] = {}
    for col in [c for c in frame.columns if c not in excluded]:
        values = frame[col]
        categorical = col in listed_categorical or _column_is_categorical(values, train, col, path, name, ids)
        if categorical:
            text = values.astype("string").str.strip().fillna("__missing__").astype(object)
            text[text == ""] = "__missing__"
            vocab = sorted(set(text[train]))
            onehot = np.stack([(text == level).to_numpy(dtype=np.float32) for level in vocab], axis=1)
            blocks.append(onehot)
            names += [f"{col}={level}" for level in vocab]
            fitted["categorical"][col] = vocab
        else:
            numeric = pd.to_numeric(values, errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan, copy=True
            )
            numeric[~np.isfinite(numeric)] = np.nan
            train_values = numeric[train]
            if np.isnan(train_values).all():
                dropped[col] = "no value in any training subject"
                continue
            median = float(np.nanmedian(train_values))
            filled = np.where(np.isnan(numeric), median, numeric)
            mean, std = float(filled[train].mean()), float(filled[train].std())
            # A constant column (up to rounding: mean of 3 equal floats can differ from them by an ulp)
            # is centred, not blown up by a near-zero std.
            std = std if std > 1e-9 * max(1.0, abs(mean)) else 1.0
            blocks.append(((filled - mean) / std).astype(np.float32)[:, None])
            names.append(col)
            fitted["numeric"][col] = {"median": median, "mean": mean, "std": std}
    if not blocks:
        raise DataError(f"{path}: no feature columns left besides '{id_col}' and '{sex_col}'")
    meta = {
        "kind": "tabular",
        "feature_names": names,
        "activation": "identity",
        "binary_features": False,
        "sex_mapping": sex_mapping,
        "dropped_columns": dropped,
        "fitted": fitted,
        "fitted_on": "train",
    }
    return PreparedDataset(features=np.concatenate(blocks, axis=1), subjects=subjects, meta=meta)
