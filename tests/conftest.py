"""Shared fixtures for the EHR spine tests: small synthetic cohorts and tiny prepared datasets.

Everything here is session-scoped and small, except ``default_ehr_cohort`` (the documented default size,
2,000 × 300, ~2–3 s to generate), which only the synthetic ground-truth test requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ae_batch.config import SplitsConfig, resolve_config
from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort


@dataclass(frozen=True)
class Cohort:
    """A synthetic EHR cohort on disk plus the ground truth ``synthesize_ehr_cohort`` returned."""

    directory: Path
    truth: dict[str, Any]

    @property
    def events(self) -> Path:
        return self.directory / "events.csv"

    @property
    def subjects(self) -> Path:
        return self.directory / "subjects.csv"

    @property
    def code_map(self) -> Path:
        return self.directory / "code_map.csv"

    @property
    def tabular(self) -> Path:
        return self.directory / "tabular.csv"


def resolved_entry(entry: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """A dataset entry as ``resolve_config`` hands it to the stages: defaults filled, paths absolute."""
    config = resolve_config({"batch_sizes": [1], "datasets": {"d": entry}}, base_dir)
    return config["datasets"]["d"]


@pytest.fixture(scope="session")
def make_entry() -> Callable[..., dict[str, Any]]:
    """``make_entry(entry_dict, base_dir)`` → the resolved dataset entry (defaults filled in)."""
    return resolved_entry


@pytest.fixture(scope="session")
def splits_config() -> SplitsConfig:
    return SplitsConfig()


@pytest.fixture(scope="session")
def small_ehr_cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    directory = tmp_path_factory.mktemp("small_ehr")
    truth = synthesize_ehr_cohort(directory, n_subjects=300, n_phenotypes=40, seed=1)
    return Cohort(directory, truth)


@pytest.fixture(scope="session")
def default_ehr_cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """The documented default size (2,000 subjects, 300 phenotypes); generate it once per session."""
    directory = tmp_path_factory.mktemp("default_ehr")
    truth = synthesize_ehr_cohort(directory)
    return Cohort(directory, truth)


def events_entry(cohort: Cohort, **overrides: Any) -> dict[str, Any]:
    raw = {
        "kind": "events",
        "events": str(cohort.events),
        "subjects": str(cohort.subjects),
        "code_map": str(cohort.code_map),
        **overrides,
    }
    return resolved_entry(raw, cohort.directory)


@pytest.fixture(scope="session")
def make_events_entry() -> Callable[..., dict[str, Any]]:
    """``make_events_entry(cohort, **overrides)`` → resolved events entry for a synthetic cohort."""
    return events_entry


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Prepared dirs from a 120-subject cohort: ``events`` (binary, sigmoid) and ``tabular`` (identity)."""
    from ae_batch.data.ehr import build_events_dataset, build_tabular_dataset
    from ae_batch.data.prepared import save_prepared

    root = tmp_path_factory.mktemp("tiny_prepared")
    cohort = Cohort(
        root / "raw", synthesize_ehr_cohort(root / "raw", n_subjects=120, n_phenotypes=20, seed=3)
    )
    events = build_events_dataset(events_entry(cohort, min_count=2), SplitsConfig())
    save_prepared(root / "events", events)
    tabular = build_tabular_dataset(
        resolved_entry({"kind": "tabular", "path": str(cohort.tabular)}, root), SplitsConfig()
    )
    save_prepared(root / "tabular", tabular)
    return {"events": root / "events", "tabular": root / "tabular", "root": root}


@pytest.fixture(scope="session")
def ehr_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny EHR study (two protocols, two batch sizes, two seeds), run once per session.
    Tests that change it work on a copy (``shutil.copytree`` keeps the files' mtimes)."""
    from snakemake_helpers import TINY_EHR_STUDY, run_snakemake, write_config

    work = tmp_path_factory.mktemp("ehr_study")
    result = run_snakemake(work, write_config(work, TINY_EHR_STUDY))
    assert result.returncode == 0, result.stderr[-4000:]
    return work
