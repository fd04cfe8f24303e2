"""Reading user tables (CSV or parquet) with ids as text and errors that name the file and column."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ae_batch.errors import DataError


def read_table(path: str | Path, what: str, text_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV or parquet file; ``text_columns`` (ids, codes) are read as strings so "007" stays "007"."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    text_columns = list(text_columns)
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
            for col in text_columns:
                if col in frame.columns:
                    frame[col] = frame[col].astype("string").astype(object).where(frame[col].notna(), None)
        else:
            frame = pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"{what} file {path} could not be read as a table: {exc}") from None
    if frame.empty:
        raise DataError(f"{what} file {path} has no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str, path: str | Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} file {path}: missing column(s) {missing}; found columns {list(frame.columns)[:20]}"
        )


def clean_ids(frame: pd.DataFrame, id_column: str, what: str, path: str | Path) -> pd.Series:
    """Strip ids, refuse missing and duplicate ids; return the id column as text."""
    ids = frame[id_column].astype("string").str.strip()
    if ids.isna().any() or (ids == "").any():
        rows = (ids.isna() | (ids == "")).to_numpy().nonzero()[0][:5].tolist()
        raise DataError(f"{what} file {path}: column '{id_column}' is empty on row(s) {rows}")
    dup = ids[ids.duplicated()].unique()[:5].tolist()
    if dup:
        raise DataError(f"{what} file {path}: duplicate subject ids in '{id_column}': {dup}")
    return ids.astype(object)
