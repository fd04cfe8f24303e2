"""Stage ``prepare``: raw data → ``results/<study>/<dataset>/prepared/`` (see ``data.prepared``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ae_batch.config import SplitsConfig
from ae_batch.data.prepared import PreparedDataset, save_prepared
from ae_batch.errors import ConfigError


def build_dataset(name: str, entry: dict[str, Any], splits: SplitsConfig) -> PreparedDataset:
    kind = entry["kind"]
    if kind == "events":
        from ae_batch.data.ehr import build_events_dataset

        return build_events_dataset(entry, splits, name)
    if kind == "tabular":
        from ae_batch.data.ehr import build_tabular_dataset

        return build_tabular_dataset(entry, splits, name)
    if kind == "mri":
        from ae_batch.data.mri_prepare import build_mri_dataset

        return build_mri_dataset(entry, splits, name)
    raise ConfigError(f"datasets.{name}.kind: unknown kind {kind!r}; expected events, tabular or mri")


def prepare_dataset(
    name: str,
    entry: dict[str, Any],
    splits: SplitsConfig,
    out_dir: str | Path,
    max_batch_size: int | None = None,
) -> PreparedDataset:
    """Build the dataset, check the batch sizes fit its training split, and save it atomically."""
    data = build_dataset(name, entry, splits)
    n_train = int(data.mask("train").sum())
    if max_batch_size is not None and max_batch_size > n_train:
        raise ConfigError(
            f"batch_sizes: {max_batch_size} is larger than the {n_train} training subjects of dataset '{name}'"
        )
    data.meta.update({"dataset": name, "splits": splits.__dict__})
    save_prepared(out_dir, data)
    contract = data.input_contract()
    print(
        f"prepared '{name}': {len(data.subjects)} subjects {contract['n_subjects']}, input shape {contract['shape']}",
        file=sys.stderr,
    )
    return data
