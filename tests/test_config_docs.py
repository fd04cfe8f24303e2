"""config/README.md's reference table says the defaults the code uses: every documented default of a
top-level key equals the default study's resolved value (config/config.yaml merged with the schema's
defaults), so the reference cannot drift from the config."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from snakemake_helpers import REPO

from ae_batch.config import study_raw_config, validate_config

ROW = re.compile(r"^\| `([a-z_.]+)` \| `([^|]*)` \|", re.M)


def _documented() -> list[tuple[str, str]]:
    text = (REPO / "config/README.md").read_text()
    table = text.split("## Protocols")[0]  # the top-level keys (dataset and protocol keys follow)
    return ROW.findall(table)


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value[part]
    return value


def _same(documented: Any, actual: Any) -> bool:
    if isinstance(actual, float) and not isinstance(documented, bool):
        return float(documented) == actual
    return documented == actual


def test_the_reference_table_documents_many_keys() -> None:
    keys = [key for key, _ in _documented()]
    assert len(keys) >= 25 and {"batch_sizes", "training.max_epochs", "model.latent_dim"} <= set(keys)


@pytest.mark.parametrize(("key", "default"), _documented())
def test_documented_default_is_the_default_studys_value(key: str, default: str) -> None:
    resolved = validate_config(study_raw_config())
    assert _same(yaml.safe_load(default), _lookup(resolved, key)), (key, default, _lookup(resolved, key))
