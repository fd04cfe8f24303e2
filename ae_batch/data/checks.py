"""Fast checks of a dataset's input files, run before any job (the Snakefile calls them at parse time).

:func:`check_dataset` raises the ``DataError`` that ``prepare`` would raise, through the same validation
functions, without the expensive part:

- ``events`` / ``tabular``: the prepare code itself (``build_events_dataset`` / ``build_tabular_dataset``),
  which takes well under a second at the default synthetic size;
- ``mri``: :func:`ae_batch.data.mri_prepare.check_mri_dataset`, i.e. layout discovery, the subjects-CSV
  join, every NIfTI header (shape, affine, file length) and the sex column, never voxels or MONAI.

:func:`check_dataset_cached` skips the check when ``<cache_dir>/<name>.json`` records the same entry,
splits, ae_batch version and, for every input file, the same size and modification time (for an MRI
folder: every file below it). Paths in the cache key are written relative to the working directory
when they lie below it, so a copied project folder still hits its cache where the files are unchanged.
This module imports pandas only when a check actually runs, so a cache hit costs milliseconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ae_batch.config import SplitsConfig
from ae_batch.errors import ConfigError, DataError

# The entry keys holding input paths, per kind, and what each is called in messages.
INPUT_KEYS: dict[str, dict[str, str]] = {
    "events": {"events": "events file", "subjects": "subjects file", "code_map": "code map file"},
    "tabular": {"path": "table file"},
    "mri": {"path": "MRI data path", "subjects": "subjects file"},
}
# Entry keys that do not change what the check sees (training overrides): not part of the cache key.
NON_DATA_KEYS = frozenset({"model", "protocols"})
CACHE_FORMAT = 1


def check_dataset(name: str, entry: dict[str, Any], splits: SplitsConfig) -> dict[str, Any]:
    """Raise the DataError ``prepare`` would raise for dataset ``name``; return a small summary.

    Summary keys: ``kind``, ``n_subjects``, ``n_per_split`` ({train, val, test}), ``input_shape``
    (one sample), ``n_features`` (events/tabular; None for mri).
    """
    kind = entry.get("kind")
    if kind not in INPUT_KEYS:
        raise ConfigError(f"datasets.{name}.kind: unknown kind {kind!r}; expected events, tabular or mri")
    _require_inputs(name, entry)
    if kind == "mri":
        return _check_mri(name, entry, splits)
    from ae_batch.data.ehr import build_events_dataset, build_tabular_dataset

    build = build_events_dataset if kind == "events" else build_tabular_dataset
    data = build(entry, splits, name)
    counts = data.subjects["split"].value_counts()
    return {
        "kind": kind,
        "n_subjects": len(data.subjects),
        "n_per_split": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")},
        "input_shape": [int(data.features.shape[1])],
        "n_features": int(data.features.shape[1]),
    }


def _check_mri(name: str, entry: dict[str, Any], splits: SplitsConfig) -> dict[str, Any]:
    from ae_batch.data.mri_prepare import check_mri_dataset
    from ae_batch.data.splits import make_splits

    inputs, sex, _ = check_mri_dataset(entry, name)
    # Split sizes do not depend on the strata (prepare stratifies by sex, else by tumour side, which needs
    # voxels): the same call without strata gives the counts and the "too few subjects" error.
    split = make_splits(inputs.subject_ids, None, splits.val_fraction, splits.test_fraction, splits.seed)
    counts = split.value_counts()
    return {
        "kind": "mri",
        "n_subjects": len(inputs.subjects),
        "n_per_split": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")},
        "input_shape": [1, *inputs.spatial_size],
        "n_features": None,
        "layout": inputs.layout,
        "n_with_seg": sum(s.seg is not None for s in inputs.subjects),
        "n_with_sex": int(sex.notna().sum()),
    }


def check_dataset_cached(
    name: str,
    entry: dict[str, Any],
    splits: SplitsConfig,
    cache_dir: str | os.PathLike[str],
    base_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """:func:`check_dataset`, skipped when ``<cache_dir>/<name>.json`` shows nothing changed since it passed.

    The cache key holds the entry (less ``model``/``protocols``), the splits, the ae_batch version and
    (size, mtime_ns) of every input file; paths below ``base_dir`` (default: the working directory) are
    written relative to it. Only a passing check is cached. The returned summary has ``cached`` added.
    """
    _require_inputs(name, entry)
    base = Path(base_dir if base_dir is not None else os.getcwd()).resolve()
    key = _cache_key(name, entry, splits, base)
    path = Path(cache_dir) / f"{name}.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("summary"), dict):
        return {**stored["summary"], "cached": True}
    summary = check_dataset(name, entry, splits)
    from ae_batch.io import write_json

    write_json(path, {"key": key, "summary": summary})
    return {**summary, "cached": False}


# --- inputs and the cache key ---------------------------------------------------------------------


def _input_paths(entry: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for key in INPUT_KEYS.get(entry.get("kind", ""), {}):
        value = entry.get(key)
        if value is not None:
            yield key, str(value)


def _require_inputs(name: str, entry: dict[str, Any]) -> None:
    """A missing input file is a DataError naming the path and the config key that names it."""
    for key, value in _input_paths(entry):
        if not Path(value).exists():
            what = INPUT_KEYS[entry["kind"]][key]
            raise DataError(f"{value}: {what} not found (config key 'datasets.{name}.{key}')")


def _portable(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when it lies below it (as given otherwise), with ``/`` separators."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        try:  # base may be reached through a symlink the entry's path does not use
            return Path(os.path.realpath(absolute)).relative_to(base).as_posix()
        except ValueError:
            return path


def _stat(path: str | os.PathLike[str]) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _tree(folder: str) -> dict[str, list[int]]:
    """Every file below ``folder`` (following symlinks, each directory once): relative path → stat."""
    out: dict[str, list[int]] = {}
    seen: set[tuple[int, int]] = set()
    stack = [Path(folder)]
    while stack:
        current = stack.pop()
        try:
            st = current.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(current))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir():
                    stack.append(Path(e.path))
                else:
                    s = e.stat()
                    out[Path(e.path).relative_to(folder).as_posix()] = [s.st_size, s.st_mtime_ns]
            except OSError:
                out[Path(e.path).relative_to(folder).as_posix()] = []
    return dict(sorted(out.items()))


def _manifest_files(manifest: str) -> list[str]:
    """The image and seg paths a manifest CSV names (resolved as discovery resolves them)."""
    import csv

    delimiter = "\t" if manifest.lower().endswith(".tsv") else ","  # as discovery reads it (no pandas here)
    files = []
    try:
        with open(manifest, newline="", encoding="utf-8-sig", errors="replace") as fh:
            for row in csv.DictReader(fh, delimiter=delimiter):
                for col in ("image", "seg"):
                    text = (row.get(col) or "").strip()
                    if text:
                        p = Path(text).expanduser()
                        files.append(str(p if p.is_absolute() else Path(manifest).parent / p))
    except (OSError, csv.Error):
        pass
    return files


def _cache_key(name: str, entry: dict[str, Any], splits: SplitsConfig, base: Path) -> dict[str, Any]:
    from ae_batch import __version__

    paths = dict(_input_paths(entry))
    data_entry = {
        k: (_portable(str(v), base) if k in paths and v is not None else v)
        for k, v in sorted(entry.items())
        if k not in NON_DATA_KEYS
    }
    files: dict[str, Any] = {}
    for key, value in paths.items():
        if os.path.isdir(value):
            files[_portable(value, base)] = _tree(value)
        else:
            files[_portable(value, base)] = _stat(value)
            if entry.get("kind") == "mri" and key == "path":
                for f in _manifest_files(value):  # a manifest's images live wherever it says
                    files[_portable(f, base)] = _stat(f)
    key = {
        "format": CACHE_FORMAT,
        "ae_batch": __version__,
        "dataset": name,
        "entry": data_entry,
        "splits": asdict(splits),
        "files": files,
    }
    return json.loads(json.dumps(key, sort_keys=True, default=str))  # as it reads back from the file
