"""Stage ``train`` on a tiny prepared cohort: outputs, step accounting under both budgets, best-by-val
checkpoint, determinism, config errors, and a diverging member that does not poison its siblings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from train_helpers import MODEL, make_spec

from ae_batch.config import ProtocolConfig
from ae_batch.data.prepared import load_prepared
from ae_batch.errors import ConfigError
from ae_batch.io import read_json
from ae_batch.models.factory import load_model
from ae_batch.models.losses import per_sample_loss
from ae_batch.stages.train import train_group

BATCH = 4
# A high learning rate makes the validation loss go up again within 4 epochs on this cohort, so "model.pt
# holds the best epoch, not the last" is actually exercised.
PAPER = ProtocolConfig("paper", "epochs", epochs=4)
LR = 0.1


@pytest.fixture(scope="module", autouse=True)
def _keep_torch_threads() -> Any:
    threads = torch.get_num_threads()  # train_group sets torch threads for the process
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tiny_prepared: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("train")
    spec = make_spec(root, tiny_prepared["events"], BATCH, [(0, LR), (1, LR)], PAPER)
    manifest = train_group(spec, accelerator="cpu")
    members = {m: Path(read_json(spec)["members"][i]["dir"]) for i, m in enumerate(manifest["members"])}
    return {"spec": spec, "manifest": manifest, "members": members, "root": root}


def test_outputs_per_member_and_group(run: dict[str, Any]) -> None:
    groups = run["spec"].parent
    assert sorted(p.name for p in groups.iterdir()) == [
        "g0123456789.progress.json",
        "g0123456789.spec.json",
        "g0123456789.train.json",
    ]  # the resume checkpoint is gone once the outputs exist
    assert read_json(groups / "g0123456789.progress.json")["status"] == "trained"
    for name, folder in run["members"].items():
        assert sorted(p.name for p in folder.iterdir()) == ["history.csv", "model.pt", "train.json"]
        record = read_json(folder / "train.json")
        assert record["member"] == name and record["train_group_id"] == "g0123456789"
        assert record["fingerprint"] == f"fp-{name}" and record["n_members"] == 2
        assert record["protocol"] == "paper" and record["learning_rate"] == LR
    assert run["manifest"]["members"] == ["seed0", "seed1"]


def test_step_accounting_under_an_epoch_budget(run: dict[str, Any], tiny_prepared: Any) -> None:
    n_train = int(load_prepared(tiny_prepared["events"]).mask("train").sum())
    assert n_train == 72
    per_epoch = math.ceil(n_train / BATCH)
    for folder in run["members"].values():
        record, history = read_json(folder / "train.json"), pd.read_csv(folder / "history.csv")
        assert (record["epochs"], record["steps_per_epoch"], record["steps"]) == (4, per_epoch, 4 * per_epoch)
        assert record["samples_seen"] == 4 * n_train
        assert list(history["epoch"]) == [1, 2, 3, 4]
        assert list(history["step"]) == [per_epoch * e for e in (1, 2, 3, 4)]
        assert list(history["samples"]) == [n_train * e for e in (1, 2, 3, 4)]
        assert record["final_train_loss"] == pytest.approx(history["train_loss"].iloc[-1])


def test_step_budget_validates_on_schedule_and_ends_mid_epoch(tiny_prepared: Any, tmp_path: Path) -> None:
    protocol = ProtocolConfig("equal", "steps", steps=45, validate_every_steps=10)
    spec = make_spec(tmp_path, tiny_prepared["events"], 8, [(0, 1e-3)], protocol)  # 9 steps per epoch
    train_group(spec, accelerator="cpu")
    folder = Path(read_json(spec)["members"][0]["dir"])
    record, history = read_json(folder / "train.json"), pd.read_csv(folder / "history.csv")
    assert (record["steps"], record["epochs"], record["steps_per_epoch"]) == (45, 5, 9)
    # every epoch end (9, 18, 27, 36, 45) and every 10 steps (10, 20, 30, 40)
    assert list(history["step"]) == [9, 10, 18, 20, 27, 30, 36, 40, 45]
    assert list(history["epoch"]) == [1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert history["samples"].iloc[-1] == record["samples_seen"] == 45 * 8


def test_best_checkpoint_is_argmin_of_val_loss(run: dict[str, Any], tiny_prepared: Any) -> None:
    data = load_prepared(tiny_prepared["events"])
    val = torch.from_numpy(data.split_features("val"))
    for folder in run["members"].values():
        record, history = read_json(folder / "train.json"), pd.read_csv(folder / "history.csv")
        best = int(history["val_loss"].idxmin())
        assert (
            record["best_epoch"] == int(history["epoch"][best]) < record["epochs"]
        )  # overfits: not the last
        assert record["val_recon_loss"] == pytest.approx(history["val_loss"].min(), abs=1e-12)
        net = load_model(folder / "model.pt", MODEL, data.input_shape, "sigmoid")
        with torch.no_grad():
            loss = per_sample_loss(net(val).recon, val, "mse").mean().item()
        assert loss == pytest.approx(record["val_recon_loss"], abs=1e-6)
        assert abs(loss - history["val_loss"].iloc[-1]) > 1e-4  # and not the last epoch's weights


def test_same_spec_twice_is_byte_identical(run: dict[str, Any], tiny_prepared: Any, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared["events"], BATCH, [(0, LR), (1, LR)], PAPER)
    train_group(spec, accelerator="cpu")
    for member in ("seed0", "seed1"):
        a = Path(read_json(spec)["members"][int(member[-1])]["dir"])
        b = run["members"][member]
        assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
        cols = ["epoch", "step", "samples", "train_loss", "val_loss"]
        pd.testing.assert_frame_equal(
            pd.read_csv(a / "history.csv")[cols], pd.read_csv(b / "history.csv")[cols]
        )


def test_batch_size_larger_than_train_raises_before_training(tiny_prepared: Any, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared["events"], 73, [(0, 1e-3)], PAPER)
    with pytest.raises(ConfigError) as info:
        train_group(spec, accelerator="cpu")
    assert "73" in str(info.value) and "72" in str(info.value) and "'ehr'" in str(info.value)
    assert not Path(read_json(spec)["members"][0]["dir"]).exists()


def test_bce_needs_a_sigmoid_output(tiny_prepared: Any, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared["tabular"], 4, [(0, 1e-3)], PAPER, dataset="tab", loss="bce")
    with pytest.raises(ConfigError, match=r"training\.loss 'bce'.*'tab'"):
        train_group(spec, accelerator="cpu")
    spec = make_spec(
        tmp_path / "b",
        tiny_prepared["events"],
        8,
        [(0, 1e-3)],
        ProtocolConfig("p", "epochs", epochs=1),
        loss="bce",
    )
    train_group(spec, accelerator="cpu")
    record = read_json(Path(read_json(spec)["members"][0]["dir"]) / "train.json")
    assert 0.1 < record["val_recon_loss"] < 1.0  # a BCE of ~ln 2 at init, not an MSE (~0.25)


def test_validation_loss_does_not_depend_on_eval_batch_size(
    run: dict[str, Any], tiny_prepared: Any, tmp_path: Path
) -> None:
    # 18 validation subjects in batches of 5 (5+5+5+3): each point must be the per-subject mean
    spec = make_spec(tmp_path, tiny_prepared["events"], BATCH, [(0, LR), (1, LR)], PAPER, eval_batch_size=5)
    train_group(spec, accelerator="cpu")
    history = pd.read_csv(Path(read_json(spec)["members"][0]["dir"]) / "history.csv")
    assert int(load_prepared(tiny_prepared["events"]).mask("val").sum()) == 18
    reference = pd.read_csv(run["members"]["seed0"] / "history.csv")
    pd.testing.assert_series_equal(history["val_loss"], reference["val_loss"], rtol=1e-6)


def test_a_diverging_member_does_not_poison_its_siblings(tiny_prepared: Any, tmp_path: Path) -> None:
    """A tuned grid with an absurd learning rate: that member diverges (recorded as such), the others
    train exactly as they would alone."""
    protocol = ProtocolConfig("tuned", "epochs", epochs=2, lr="tuned", lr_grid=(1e-3, 1e9))
    prepared = tiny_prepared["tabular"]
    spec = make_spec(
        tmp_path / "both", prepared, 4, [(0, 1e-3), (0, 1e9)], protocol, dataset="tab", optimizer="sgd"
    )
    train_group(spec, accelerator="cpu")
    dirs = [Path(m["dir"]) for m in read_json(spec)["members"]]
    bad = read_json(dirs[1] / "train.json")
    assert bad["diverged"] is True and math.isnan(bad["val_recon_loss"])
    alone = make_spec(tmp_path / "alone", prepared, 4, [(0, 1e-3)], protocol, dataset="tab", optimizer="sgd")
    train_group(alone, accelerator="cpu")
    ref_dir = Path(read_json(alone)["members"][0]["dir"])
    good, ref = read_json(dirs[0] / "train.json"), read_json(ref_dir / "train.json")
    assert good["diverged"] is False and math.isfinite(good["val_recon_loss"])
    assert good["val_recon_loss"] == pytest.approx(ref["val_recon_loss"], abs=1e-6)
    a = torch.load(dirs[0] / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(ref_dir / "model.pt", weights_only=False)["state_dict"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
