"""Stage ``train`` on a tiny prepared cohort: outputs, step accounting, best-by-val checkpoint, determinism,
config errors, and equivalence with a hand-written torch loop."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from ae_batch.config import ModelConfig, TrainingConfig
from ae_batch.data.modules import shuffle_order
from ae_batch.data.prepared import load_prepared
from ae_batch.errors import ConfigError
from ae_batch.io import read_json
from ae_batch.models.components import MLPAutoencoder
from ae_batch.models.systems import per_sample_loss
from ae_batch.stages.init import init_model, load_initial_model
from ae_batch.stages.train import train_grid_point

MODEL = ModelConfig(kind="mlp", hidden_dims=(16,), latent_dim=4)
# A high learning rate makes the validation loss go up again within 4 epochs (best epoch 2 on this
# cohort), so "model.pt holds the best epoch, not the last" is actually exercised.
TRAINING = TrainingConfig(max_epochs=4, learning_rate=0.05, accelerator="cpu", eval_batch_size=256)
BATCH = 4
LOSS_COLUMNS = ["epoch", "step", "samples", "train_loss", "val_loss"]


@pytest.fixture(scope="module", autouse=True)
def _keep_torch_threads() -> Any:
    threads = torch.get_num_threads()  # train_grid_point sets torch threads for the process
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def init_path(tiny_prepared: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("init") / "seed0.pt"
    init_model(tiny_prepared["events"], path, 0, MODEL)
    return path


def _train(tiny_prepared: Any, init_path: Path, out: Path, batch_size: int = BATCH, **kw: Any) -> dict:
    training = replace(TRAINING, **kw)
    return train_grid_point(
        tiny_prepared["events"], init_path, out, "ehr", batch_size, 0, training, MODEL, progress=False
    )


@pytest.fixture(scope="module")
def run(tiny_prepared: Any, init_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("train") / "bs4" / "seed0"
    record = _train(tiny_prepared, init_path, out)
    return {"out": out, "record": record, "history": pd.read_csv(out / "history.csv")}


def test_outputs_exist_and_record_is_written(run: dict[str, Any]) -> None:
    out = run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.pt", "train.json"]
    assert read_json(out / "train.json") == pytest.approx(run["record"])
    record = run["record"]
    assert (record["dataset"], record["batch_size"], record["seed"]) == ("ehr", BATCH, 0)
    assert record["mlflow_run_id"] is None
    assert record["accelerator"] == "cpu"


def test_step_accounting(run: dict[str, Any], tiny_prepared: Any) -> None:
    record, history = run["record"], run["history"]
    n_train = int(load_prepared(tiny_prepared["events"]).mask("train").sum())
    assert record["n_train"] == n_train == 72
    per_epoch = math.ceil(n_train / BATCH)
    assert record["epochs"] == TRAINING.max_epochs
    assert record["steps_per_epoch"] == per_epoch
    assert record["steps"] == TRAINING.max_epochs * per_epoch
    assert len(history) == TRAINING.max_epochs
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert list(history["step"]) == [per_epoch * e for e in (1, 2, 3, 4)]
    assert list(history["samples"]) == [n_train * e for e in (1, 2, 3, 4)]
    assert record["final_train_loss"] == pytest.approx(history["train_loss"].iloc[-1])


def test_uneven_last_batch_counts_a_step(tiny_prepared: Any, init_path: Path, tmp_path: Path) -> None:
    record = _train(tiny_prepared, init_path, tmp_path, batch_size=7, max_epochs=2)
    assert record["steps"] == 2 * math.ceil(72 / 7) == 22


def test_best_epoch_is_argmin_of_val_loss(run: dict[str, Any]) -> None:
    record, history = run["record"], run["history"]
    best_row = int(history["val_loss"].idxmin())
    assert record["best_epoch"] == int(history["epoch"][best_row])
    assert record["val_recon_loss"] == pytest.approx(history["val_loss"].min(), abs=1e-12)
    assert record["best_epoch"] < record["epochs"]  # this configuration overfits: not the last epoch


def test_checkpoint_holds_the_best_epoch_weights(run: dict[str, Any], tiny_prepared: Any) -> None:
    data = load_prepared(tiny_prepared["events"])
    payload = torch.load(run["out"] / "model.pt", map_location="cpu", weights_only=False)
    assert payload["best_epoch"] == run["record"]["best_epoch"]
    net = MLPAutoencoder(data.input_shape[0], MODEL.hidden_dims, MODEL.latent_dim, "sigmoid")
    net.load_state_dict(payload["state_dict"])
    val = torch.from_numpy(data.split_features("val"))
    with torch.no_grad():
        loss = per_sample_loss(net(val).recon, val, "mse").mean().item()
    assert loss == pytest.approx(run["record"]["val_recon_loss"], abs=1e-6)
    # and not the last epoch's, whose validation loss was different
    last_val = run["history"]["val_loss"].iloc[-1]
    assert abs(loss - last_val) > 1e-4


def test_same_config_twice_is_identical(
    run: dict[str, Any], tiny_prepared: Any, init_path: Path, tmp_path: Path
) -> None:
    record = _train(tiny_prepared, init_path, tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    pd.testing.assert_frame_equal(history[LOSS_COLUMNS], run["history"][LOSS_COLUMNS], check_exact=True)
    assert record["val_recon_loss"] == run["record"]["val_recon_loss"]
    a = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(run["out"] / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "model.pt").read_bytes() == (run["out"] / "model.pt").read_bytes()


def test_batch_size_larger_than_train_raises_before_training(
    tiny_prepared: Any, init_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bs73"
    with pytest.raises(ConfigError) as info:
        _train(tiny_prepared, init_path, out, batch_size=73)
    assert "73" in str(info.value) and "72" in str(info.value) and "'ehr'" in str(info.value)
    assert not out.exists()
    record = _train(tiny_prepared, init_path, tmp_path / "bs72", batch_size=72, max_epochs=1)
    assert record["steps"] == 1  # exactly n_train is allowed: one full batch per epoch


def test_bce_with_identity_output_raises(tiny_prepared: Any, tmp_path: Path) -> None:
    init = tmp_path / "tab_init.pt"
    init_model(tiny_prepared["tabular"], init, 0, MODEL)
    with pytest.raises(ConfigError, match=r"training\.loss 'bce'.*'tab'"):
        train_grid_point(
            tiny_prepared["tabular"], init, tmp_path / "out", "tab", 4, 0,
            replace(TRAINING, loss="bce"), MODEL, progress=False,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()
    # mse on the same table trains, and bce on binary events trains
    record = train_grid_point(
        tiny_prepared["tabular"], init, tmp_path / "mse", "tab", 8, 0,
        replace(TRAINING, max_epochs=1), MODEL, progress=False,
    )  # fmt: skip
    assert math.isfinite(record["val_recon_loss"])


def test_bce_on_binary_events_trains(tiny_prepared: Any, init_path: Path, tmp_path: Path) -> None:
    record = _train(tiny_prepared, init_path, tmp_path, loss="bce", max_epochs=1, learning_rate=1e-3)
    assert 0.1 < record["val_recon_loss"] < 1.0  # a BCE of ~ln 2 at init, not an MSE (~0.25)


def test_matches_a_hand_written_torch_loop(tiny_prepared: Any, init_path: Path, tmp_path: Path) -> None:
    """One epoch at batch size 4 through Lightning equals a plain Adam loop in the same shuffle order."""
    lr, seed = 1e-3, 0
    _train(tiny_prepared, init_path, tmp_path, max_epochs=1, learning_rate=lr)
    lightning_state = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]

    data = load_prepared(tiny_prepared["events"])
    x = torch.from_numpy(data.split_features("train"))
    net = load_initial_model(init_path, MODEL, data.input_shape, "sigmoid")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for idx in torch.split(shuffle_order(len(x), seed, 0), BATCH):
        opt.zero_grad()
        F.mse_loss(net(x[idx]).recon, x[idx]).backward()
        opt.step()
    initial = load_initial_model(init_path, MODEL, data.input_shape, "sigmoid").state_dict()
    for key, value in net.state_dict().items():
        assert not torch.equal(value, initial[key]), key  # the loop really moved every tensor
        torch.testing.assert_close(lightning_state[key], value, rtol=0, atol=1e-6)

    # a different shuffle order (wrong epoch) gives measurably different weights: the check has teeth
    other = load_initial_model(init_path, MODEL, data.input_shape, "sigmoid")
    opt = torch.optim.Adam(other.parameters(), lr=lr)
    for idx in torch.split(shuffle_order(len(x), seed, 1), BATCH):
        opt.zero_grad()
        F.mse_loss(other(x[idx]).recon, x[idx]).backward()
        opt.step()
    diff = max((other.state_dict()[k] - lightning_state[k]).abs().max().item() for k in lightning_state)
    assert diff > 1e-5


def test_validation_loss_does_not_depend_on_eval_batch_size(
    run: dict[str, Any], tiny_prepared: Any, init_path: Path, tmp_path: Path
) -> None:
    # 18 validation subjects in batches of 5 (5+5+5+3): the epoch loss must be the per-subject mean
    _train(tiny_prepared, init_path, tmp_path, eval_batch_size=5)
    history = pd.read_csv(tmp_path / "history.csv")
    assert int(load_prepared(tiny_prepared["events"]).mask("val").sum()) == 18
    pd.testing.assert_series_equal(history["val_loss"], run["history"]["val_loss"], rtol=1e-6)


def test_diverged_run_never_writes_a_checkpoint_without_weights(tiny_prepared: Any, tmp_path: Path) -> None:
    from ae_batch.errors import AeBatchError

    init = tmp_path / "init.pt"
    init_model(tiny_prepared["tabular"], init, 0, MODEL)
    training = replace(TRAINING, max_epochs=2, learning_rate=1e6, optimizer="sgd")
    try:
        record = train_grid_point(
            tiny_prepared["tabular"], init, tmp_path / "out", "tab", 4, 0, training, MODEL, progress=False
        )
    except AeBatchError:
        assert not (tmp_path / "out" / "model.pt").exists()
        return  # refusing with a clear error is fine
    payload = torch.load(tmp_path / "out" / "model.pt", weights_only=False)
    assert payload["state_dict"] is not None
    assert 1 <= record["best_epoch"] <= record["epochs"]
    assert math.isfinite(record["val_recon_loss"])
