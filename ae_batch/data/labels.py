"""Sex labels: any spelling with exactly two distinct values, mapped to 0/1 and recorded."""

from __future__ import annotations

import contextlib

import pandas as pd

from ae_batch.errors import DataError

# Spellings we recognise, so the mapping is stable across files: female → 0, male → 1.
_FEMALE = {"f", "female", "woman", "w", "fem"}
_MALE = {"m", "male", "man", "mal"}


def encode_sex(values: pd.Series, source: str) -> tuple[pd.Series, dict[str, int]]:
    """Map a sex column with exactly two distinct non-missing values to 0/1 (missing stays NaN).

    Recognised words map female → 0, male → 1; any other two values (e.g. 1/2) map in sorted order,
    smaller → 0. Returns the encoded float Series and the mapping ``{raw value: code}``.
    ``source`` names the file and column in error messages.
    """
    raw = values.astype("string").str.strip()
    raw = raw.mask(raw == "")
    distinct = sorted(raw.dropna().unique().tolist())
    if len(distinct) != 2:
        shown = distinct[:10]
        raise DataError(
            f"{source}: sex must have exactly two distinct values, found {len(distinct)}: {shown}"
        )
    lowered = [d.lower() for d in distinct]
    if lowered[0] in _MALE and lowered[1] in _FEMALE:
        distinct = distinct[::-1]
    elif not (lowered[0] in _FEMALE and lowered[1] in _MALE):
        with contextlib.suppress(ValueError):  # numeric codes sort numerically: "2" < "10"
            distinct = sorted(distinct, key=float)
    mapping = {distinct[0]: 0, distinct[1]: 1}
    encoded = raw.map(mapping).astype("float64")
    return encoded, mapping
