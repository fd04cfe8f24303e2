"""``ae-batch ui`` in a real browser: the printed link opens the study's runs, not MLflow's GenAI overview.

The session's tiny study (tests/conftest.py, run once through the real workflow), ``ae-batch ui`` serves its
sqlite store on a free port, and Debian's headless Chromium renders the pages (see ``browser_helpers``).
Screenshots go to the pytest tmp dir (``mlflow_screenshots*``), to ``results/screenshots/`` of the study
folder and, where ``AE_BATCH_SCREENSHOTS_DIR`` is set (CI artifacts), there too.

The browser tests skip, saying why, only where no ``chromium`` is on PATH (``apt-get install chromium``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import yaml
from browser_helpers import ae_batch_ui, find_chromium, free_port, page_text, port_answers, stop
from snakemake_helpers import TINY_ICD

from ae_batch.cli import main
from ae_batch.errors import ConfigError
from ae_batch.ui import open_ui, run_url, runs_url

STUDY = "tiny"  # the session's tiny EHR study (tests/conftest.py ehr_study): 1 dataset, 8 members
# Grid-point runs only, best test loss first (a sort other than by date lists them flat, not nested).
MEMBERS_QUERY = "&" + urlencode(
    {
        "searchFilter": "tags.`ae_batch.level` = 'grid_point'",
        "orderByKey": "metrics.`test_recon_loss`",
        "orderByAsc": "true",
    },
    quote_via=quote,
)


@dataclass
class Ui:
    link: str
    base: str
    port: int
    proc: subprocess.Popen[str]
    workdir: Path
    experiment_id: str
    parents: dict[str, str]  # run name (= dataset) → run id
    members: list[Any]  # mlflow Runs of the grid points (names repeat across datasets)


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip(
            "no Chromium on PATH (`chromium`): `apt-get install chromium` to run the MLflow browser tests"
        )
    return found


@pytest.fixture(scope="module")
def study(ehr_study: Path) -> Path:
    """The session's finished tiny study (tests/conftest.py) with its MLflow store ``mlflow.db``."""
    return ehr_study


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow_screenshots")


@pytest.fixture(scope="module")
def ui(browser: str, study: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``ae-batch ui study.yaml --port <free>`` running in the study folder; stopped (SIGINT) at the end."""
    from ae_batch.tracking import LEVEL_TAG, client

    mc = client(f"sqlite:///{study / 'mlflow.db'}")
    exp = mc.get_experiment_by_name(f"ae-batch-{STUDY}")
    runs = mc.search_runs([exp.experiment_id], max_results=1000)
    parents = {r.info.run_name: r.info.run_id for r in runs if r.data.tags.get(LEVEL_TAG) == "dataset"}
    members = [r for r in runs if r.data.tags.get(LEVEL_TAG) == "grid_point"]
    assert sorted(parents) == ["icd"] and len(members) == 8, (sorted(parents), members)

    port = free_port()
    log = tmp_path_factory.mktemp("ui_log") / "ae-batch-ui.stderr"
    with ae_batch_ui(study, "study.yaml", port, log) as (link, proc):
        yield Ui(link, f"http://127.0.0.1:{port}", port, proc, study, exp.experiment_id, parents, members)


def keep(png: Path, ui: Ui) -> None:
    """Copy a screenshot to the study's results/ (and to $AE_BATCH_SCREENSHOTS_DIR, where set)."""
    targets = [ui.workdir / "results" / "screenshots"]
    if os.environ.get("AE_BATCH_SCREENSHOTS_DIR"):
        targets.append(Path(os.environ["AE_BATCH_SCREENSHOTS_DIR"]))
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target / png.name)


@pytest.mark.slow
@pytest.mark.browser
def test_link_opens_the_runs_page_with_one_parent_per_dataset(browser: str, ui: Ui, shots: Path) -> None:
    assert ui.link == runs_url(ui.base, ui.experiment_id)
    assert ui.link.endswith(f"/#/experiments/{ui.experiment_id}/runs?workflowType=machine_learning")
    png = shots / "01_runs.png"
    total = len(ui.parents) + len(ui.members)
    text = page_text(browser, ui.link, png, [*ui.parents, f"{total} matching runs"])
    keep(png, ui)
    assert f"ae-batch-{STUDY}" in text
    assert "Model training" in text and "Runs" in text, text[:2000]
    assert "Detect Issues" not in text, "landed on the GenAI traces overview, not the runs"
    for dataset in ui.parents:
        assert re.search(rf"\b{dataset}\b", text), (dataset, text[:2000])
    assert f"{total} matching runs" in text, text[:2000]  # parents listed, their children nested


@pytest.mark.slow
@pytest.mark.browser
def test_member_runs_list(browser: str, ui: Ui, shots: Path) -> None:
    url = ui.link + MEMBERS_QUERY
    png = shots / "02_member_runs.png"
    names = sorted({r.info.run_name for r in ui.members})
    text = page_text(browser, url, png, names)
    keep(png, ui)
    for name in names:
        assert text.count(name) == len(ui.parents), (name, text[:2000])  # once per dataset
    assert f"{len(ui.members)} matching runs" in text, text[:2000]


@pytest.mark.slow
@pytest.mark.browser
def test_member_run_page_shows_its_metrics(browser: str, ui: Ui, shots: Path) -> None:
    run = min(ui.members, key=lambda r: r.data.metrics["test_recon_loss"])
    name = run.info.run_name
    url = run_url(ui.base, ui.experiment_id, run.info.run_id)
    png = shots / "03_member_run.png"
    text = page_text(browser, url, png, [name, "test_recon_loss"], window=(1600, 1800))
    keep(png, ui)
    assert name in text, text[:2000]
    assert f"Parent run {run.data.tags['dataset']}" in text, text[:3000]
    for metric in ("test_recon_loss", "val_recon_loss", "latent_effective_rank"):
        shown = re.search(rf"\b{metric} (\S+)", text)
        assert shown, (metric, text[:3000])
        assert math.isclose(float(shown.group(1)), run.data.metrics[metric], rel_tol=1e-6), (
            metric,
            shown.group(1),
        )
    assert f"Run ID {run.info.run_id}" in text


@pytest.mark.slow
@pytest.mark.browser
def test_member_run_charts_show_the_training_curves(browser: str, ui: Ui, shots: Path) -> None:
    run = min(ui.members, key=lambda r: r.data.metrics["test_recon_loss"])
    url = f"{ui.base}/#/experiments/{ui.experiment_id}/runs/{run.info.run_id}/model-metrics?workflowType=machine_learning"
    png = shots / "04_member_run_charts.png"
    curves = [f"{run.info.run_name} (train/loss)", f"{run.info.run_name} (val/loss)"]
    text = page_text(browser, url, png, curves)
    keep(png, ui)
    for curve in curves:
        assert curve in text, (curve, text[:2000])


@pytest.mark.slow
@pytest.mark.browser
def test_ctrl_c_stops_mlflow(ui: Ui) -> None:
    """Last in this module: SIGINT to ``ae-batch ui`` stops the `mlflow ui` it started (its own session)."""
    assert port_answers(ui.port)
    assert stop(ui.proc) == 0
    assert not port_answers(ui.port), f"mlflow ui still answers on port {ui.port} after Ctrl-C"


@pytest.mark.slow
def test_print_only_prints_the_link(
    study: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(study)
    port = free_port()
    assert main(["ui", "study.yaml", "--print-only", "--port", str(port)]) == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(
        rf"http://127\.0\.0\.1:{port}/#/experiments/\d+/runs\?workflowType=machine_learning", out
    )
    assert not port_answers(port)


def _write_config(folder: Path, **mlflow: str) -> str:
    cfg = {"study": "never", "batch_sizes": [4], "datasets": {"icd": TINY_ICD}}
    if mlflow:
        cfg["mlflow"] = mlflow
    (folder / "study.yaml").write_text(yaml.safe_dump(cfg))
    return str(folder / "study.yaml")


def test_study_not_run_here_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path)
    with pytest.raises(ConfigError, match="has not run yet in this folder"):
        open_ui([config], serve=False)
    assert not (tmp_path / "mlflow.db").exists(), "looking must not create an empty MLflow store"


def test_tracking_server_link_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path, tracking_uri="https://mlflow.example.org/")
    exp = SimpleNamespace(experiment_id="42", lifecycle_stage="active")
    fake = SimpleNamespace(get_experiment_by_name=lambda name: exp if name == "ae-batch-never" else None)
    monkeypatch.setattr("ae_batch.tracking.client", lambda uri: fake)

    def no_server(*a: Any, **k: Any) -> None:
        raise AssertionError("started a process for a tracking server")

    monkeypatch.setattr(subprocess, "Popen", no_server)
    open_ui([config], port=5000, serve=True)
    assert (
        capsys.readouterr().out.strip()
        == "https://mlflow.example.org/#/experiments/42/runs?workflowType=machine_learning"
    )
