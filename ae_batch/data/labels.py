"""Sex labels: any spelling with exactly two distinct values, mapped to 0/1 and recorded.

:data:`FEMALE_WORDS` / :data:`MALE_WORDS` are the one list of recognised spellings, used both for a
subject's sex column and for the sex restriction column of an EHR code map (:func:`sex_word`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from ae_batch.errors import DataError

# Spellings we recognise (compared lower-cased, stripped), so the mapping is stable across files:
# female → 0, male → 1.
FEMALE_WORDS = frozenset({"f", "female", "woman", "women", "w", "fem"})
MALE_WORDS = frozenset({"m", "male", "man", "men", "mal"})
_MAX_SHOWN = 5


def sex_word(value: Any) -> str:
    """``"female"``, ``"male"``, or ``""`` when ``value`` is missing or not a recognised spelling."""
    text = "" if value is None or pd.isna(value) else str(value).strip().lower()
    if text in FEMALE_WORDS:
        return "female"
    if text in MALE_WORDS:
        return "male"
    return ""


def encode_sex(
    values: pd.Series,
    source: str,
    ids: Sequence[object] | None = None,
    locate: Callable[[int], str] | None = None,
) -> tuple[pd.Series, dict[str, int]]:
    """Map a sex column with exactly two distinct non-missing values to 0/1 (missing stays NaN).

    Recognised words map female → 0, male → 1; any other two values (e.g. 1/2) map in sorted order,
    smaller → 0. Returns the encoded float Series and the mapping ``{raw value: code}``.
    ``source`` starts the error message (the file path and column); ``ids`` and ``locate`` (position →
    ``"line 9"``) let the message name a subject holding each unexpected value.
    """
    raw = values.astype("string").str.strip()
    raw = raw.mask(raw == "")
    counts = raw.dropna().value_counts()
    distinct = sorted(counts.index.tolist())
    if len(distinct) != 2:
        raise DataError(f"{source}: {_not_two_values(raw, distinct, counts, ids, locate)}")
    lowered = [d.lower() for d in distinct]
    if lowered[0] in MALE_WORDS and lowered[1] in FEMALE_WORDS:
        distinct = distinct[::-1]
    elif not (lowered[0] in FEMALE_WORDS and lowered[1] in MALE_WORDS):
        with contextlib.suppress(ValueError):  # numeric codes sort numerically: "2" < "10"
            distinct = sorted(distinct, key=float)
    mapping = {distinct[0]: 0, distinct[1]: 1}
    encoded = raw.map(mapping).astype("float64")
    return encoded, mapping


def _not_two_values(
    raw: pd.Series,
    distinct: list[str],
    counts: pd.Series,
    ids: Sequence[object] | None,
    locate: Callable[[int], str] | None,
) -> str:
    """The message for a sex column without exactly two values, naming who holds the odd ones."""
    head = f"sex must have exactly two values; found {len(distinct)}"
    if not distinct:
        return head + ": the column has no value at all"
    head += ": " + ", ".join(distinct[:10]) + (" ..." if len(distinct) > 10 else "")
    if len(distinct) == 1:
        return head + "; every subject has the same value"
    # The two expected values: recognised spellings first, then the most common; the rest are odd.
    ranked = sorted(distinct, key=lambda v: (sex_word(v) == "", -int(counts[v]), v))
    odd = [v for v in distinct if v not in ranked[:2]]
    values = raw.reset_index(drop=True)
    parts = []
    for value in odd[:_MAX_SHOWN]:
        first = int(values.eq(value).fillna(False).to_numpy(dtype=bool).nonzero()[0][0])
        parts.append(f"{_who(first, ids, locate)} has {value!r}")
    more = f"; and {len(odd) - _MAX_SHOWN} more unexpected values" if len(odd) > _MAX_SHOWN else ""
    return head + "; " + "; ".join(parts) + more


def _who(position: int, ids: Sequence[object] | None, locate: Callable[[int], str] | None) -> str:
    where = locate(position) if locate is not None else None
    sid = ids[position] if ids is not None else None
    if sid is not None and where:
        return f"subject {sid} ({where})"
    if sid is not None:
        return f"subject {sid}"
    return where or f"row {position + 1}"
