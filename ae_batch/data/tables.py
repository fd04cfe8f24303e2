"""Reading user tables (CSV or parquet) with ids as text, and error messages that point at the data.

Every data error starts with the file path and names the column, the subject id, where the row sits and
the offending value. Where a row sits is given by :func:`row_location`: ``line N`` for a CSV (the file
line the record starts on, 1-based, header = line 1, blank lines and quoted newlines counted), ``row N``
for parquet (1-based data row). Line numbers are worked out on demand (one scan of the file, cached
per file version), in practice only when an error is reported.
"""

from __future__ import annotations

import csv
import difflib
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from ae_batch.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
_MAX_SHOWN = 5


def is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def delimiter_of(path: str | Path) -> str:
    return "\t" if Path(path).suffix.lower() == ".tsv" else ","


# --- where a row sits ------------------------------------------------------------------------------


def row_location(path: str | Path, index: int) -> str:
    """``line N`` (CSV) or ``row N`` (parquet) of the 0-based data row ``index`` pandas read from ``path``."""
    index = int(index)
    if is_parquet(path):
        return f"row {index + 1}"
    lines = _record_lines(path)
    if lines is not None and 0 <= index + 1 < len(lines):
        return f"line {lines[index + 1]}"
    return f"line {index + 2}"  # no blank lines or multi-line fields: data row 0 is line 2


def locations(path: str | Path, indices: Iterable[int], limit: int = _MAX_SHOWN) -> str:
    """``line 4`` / ``lines 4, 9 and 12`` (parquet: ``rows``) for a few data rows of ``path``."""
    indices = list(indices)
    shown = [row_location(path, i) for i in indices[:limit]]
    if not shown:
        return ""
    unit = shown[0].split()[0]
    numbers = [s.split()[1] for s in shown]
    if len(numbers) == 1:
        text = f"{unit} {numbers[0]}"
    else:
        text = f"{unit}s {', '.join(numbers[:-1])} and {numbers[-1]}"
    return text + (f" (and {len(indices) - limit} more)" if len(indices) > limit else "")


def subject_at(path: str | Path, ids: Sequence[object] | None, index: int) -> str:
    """``subject P0007 (line 9)``, or just ``line 9`` when the id is unknown or missing."""
    where = row_location(path, index)
    sid = None if ids is None else ids[int(index)]
    if sid is None or pd.isna(sid) or str(sid).strip() == "":
        return where
    return f"subject {sid} ({where})"


def locator(path: str | Path) -> Callable[[int], str]:
    """``row_location`` bound to ``path`` (for code that reports rows without knowing the file type)."""
    return functools.partial(row_location, path)


def _record_lines(path: str | Path) -> list[int] | None:
    """File line on which each CSV record (header first) starts, skipping blank lines as pandas does."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _record_lines_cached(str(path), st.st_size, st.st_mtime_ns, delimiter_of(path))


@functools.lru_cache(maxsize=8)
def _record_lines_cached(path: str, size: int, mtime_ns: int, delimiter: str) -> list[int] | None:
    del size, mtime_ns  # cache key only: a rewritten file is scanned again
    starts: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            previous = 0
            for record in reader:
                if record and not (len(record) == 1 and not record[0].strip()):
                    starts.append(previous + 1)
                previous = reader.line_num
    except (OSError, csv.Error):
        return None
    return starts


# --- reading ---------------------------------------------------------------------------------------


def csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV's header line as written (stripped), duplicates included."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            for record in csv.reader(fh, delimiter=delimiter_of(path)):
                if record and not (len(record) == 1 and not record[0].strip()):
                    return [c.strip() for c in record]
    except (OSError, csv.Error):
        return []
    return []


def refuse_duplicate_columns(columns: Sequence[str], what: str, path: str | Path) -> None:
    """A column name that appears twice (pandas would silently read the second as ``name.1``)."""
    positions: dict[str, list[int]] = {}
    for i, c in enumerate(columns, start=1):
        if str(
            c
        ).strip():  # unnamed columns (trailing commas of a spreadsheet export) are pandas' "Unnamed: 3"
            positions.setdefault(str(c).strip(), []).append(i)
    dups = {c: p for c, p in positions.items() if len(p) > 1}
    if dups:
        col, where = next(iter(dups.items()))
        more = (
            f" (and {len(dups) - 1} more duplicated column name(s): {list(dups)[1:6]})"
            if len(dups) > 1
            else ""
        )
        cols = ", ".join(str(p) for p in where[:-1]) + f" and {where[-1]}"
        raise DataError(
            f"{path}: {what} file has column '{col}' more than once in its header (columns {cols}){more}; "
            f"pandas would silently rename the second to '{col}.1': rename or remove one"
        )


def read_table(path: str | Path, what: str, text_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV or parquet file; ``text_columns`` (ids, codes) are read as strings so "007" stays "007".

    The index of the result is the 0-based data row (see :func:`row_location`). A column name that
    appears twice in the header is refused.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    text_columns = list(text_columns)
    try:
        if is_parquet(path):
            frame = pd.read_parquet(path)
            for col in text_columns:
                if col in frame.columns:
                    frame[col] = frame[col].astype("string").astype(object).where(frame[col].notna(), None)
            frame = frame.reset_index(drop=True)
        else:
            refuse_duplicate_columns(csv_header(path), what, path)
            frame = pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"{path}: {what} file could not be read as a table: {exc}") from None
    if frame.empty:
        raise DataError(f"{path}: {what} file has no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    refuse_duplicate_columns(list(frame.columns), what, path)  # parquet, or names equal once stripped
    return frame


def closest_column(column: str, columns: Iterable[str]) -> str | None:
    """The existing column most like ``column`` (case-insensitive), if one is close."""
    columns = [str(c) for c in columns]
    lowered = {c.lower(): c for c in reversed(columns)}
    match = difflib.get_close_matches(column.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def missing_columns_error(
    missing: Sequence[str],
    columns: Sequence[str],
    what: str,
    path: str | Path,
    keys: Mapping[str, str] | None = None,
) -> DataError:
    """``<path>: <what> file lacks column 'sex' (datasets.x.sex_column; did you mean 'Sex'?); found [...]``."""
    keys = keys or {}
    parts = []
    for col in missing:
        notes = [keys[col]] if col in keys else []
        guess = closest_column(col, columns)
        if guess is not None:
            notes.append(f"did you mean '{guess}'?")
        parts.append(f"'{col}'" + (f" ({'; '.join(notes)})" if notes else ""))
    shown = list(columns)[:20]
    more = f" ... ({len(columns)} in all)" if len(columns) > 20 else ""
    noun = "column" if len(missing) == 1 else "columns"
    return DataError(f"{path}: {what} file lacks {noun} {', '.join(parts)}; found columns {shown}{more}")


def require_columns(
    frame: pd.DataFrame,
    columns: Iterable[str],
    what: str,
    path: str | Path,
    keys: Mapping[str, str] | None = None,
) -> None:
    """Refuse a frame without ``columns``; ``keys`` maps a column to the config key that named it."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise missing_columns_error(missing, list(frame.columns), what, path, keys)


def clean_ids(frame: pd.DataFrame, id_column: str, what: str, path: str | Path) -> pd.Series:
    """Strip ids, refuse missing and duplicate ids (naming their lines); return the id column as text."""
    ids = frame[id_column].astype("string").str.strip()
    empty = (ids.isna() | (ids == "")).to_numpy()
    if empty.any():
        rows = empty.nonzero()[0]
        raise DataError(
            f"{path}: column '{id_column}' has no subject id on {locations(path, rows)} "
            f"({len(rows)} row(s) in all); every row needs one"
        )
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise duplicate_ids_error(ids.astype(object).tolist(), duplicated, id_column, what, path)
    return ids.astype(object)


def duplicate_ids_error(
    ids: Sequence[str], duplicated: Sequence[bool], id_column: str, what: str, path: str | Path
) -> DataError:
    """``<path>: column 'id': subject id 003 appears twice (line 4 and line 12)`` (+ how many more)."""
    rows_of: dict[str, list[int]] = {}
    for i, (sid, dup) in enumerate(zip(ids, duplicated, strict=True)):
        if dup:
            rows_of.setdefault(str(sid), []).append(i)
    sid, rows = next(iter(rows_of.items()))
    others = list(rows_of)[1:]
    more = f"; {len(others)} more duplicated id(s): {others[:_MAX_SHOWN]}" if others else ""
    times = "twice" if len(rows) == 2 else f"{len(rows)} times"
    return DataError(
        f"{path}: column '{id_column}' of the {what} file: subject id {sid} appears {times} "
        f"({locations(path, rows)}){more}; each subject needs exactly one row"
    )
