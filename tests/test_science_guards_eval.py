"""Tests that fail when the science is wrong (part 2: evaluation and aggregation).

Planted data whose correct result is known in advance, so a plausible mistake (the wrong split, a
misaligned join) changes a number the test checks:

* ``evaluate_member`` probes, scores and describes the test split, row-aligned with subject ids;
* ``encode_and_score`` keeps per-subject rows aligned;
* ``collect_summary`` builds every row from its own member folder.

Part 1 (VQ loss, codebook seeding, PCA baseline) is ``test_science_guards.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from guard_helpers import (
    IDENTITY_MLP,
    TINY_VQ,
    VOLUME_SHAPE,
    identity_mlp,
    interleaved_subjects,
    save_dataset,
    write_member,
    write_summary_member,
)

from ae_batch.config import DownstreamConfig, ModelConfig, NoiseScaleConfig
from ae_batch.data.prepared import load_prepared
from ae_batch.evaluation.codebook import codebook_metrics
from ae_batch.evaluation.diversity import latent_diversity
from ae_batch.evaluation.downstream import downstream_folds, fold_summary
from ae_batch.evaluation.reconstruction import encode_and_score
from ae_batch.models.components import AutoencoderOutput
from ae_batch.models.factory import build_model
from ae_batch.stages.aggregate import SUMMARY_COLUMNS, collect_summary
from ae_batch.stages.evaluate import evaluate_member

FAST_PROBES = DownstreamConfig(folds=3, repeats=2, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ evaluate_member


def _mlp_member(tmp_path: Path):
    """Planted EHR-like data for :func:`identity_mlp` (latent = x, per-subject MSE = mean(x²)):

    * feature 0 separates sex in the **test** split only (val: independent of sex);
    * feature 3 is the subject's number / 100, so each subject's loss is its own;
    * val and test differ in size (24, 36), splits are shuffled together in subjects.csv."""
    rng = np.random.default_rng(5)
    n = {"train": 30, "val": 24, "test": 36}
    sex = {s: rng.permutation(np.arange(k) % 2).astype(float) for s, k in n.items()}
    x = {s: rng.uniform(0, 1, (k, 4)) for s, k in n.items()}
    x["test"][:, 0] = 0.5 + sex["test"] + rng.uniform(0, 0.2, n["test"])
    x["val"][:, 0] = rng.uniform(0.5, 1.7, n["val"])
    subjects, order = interleaved_subjects(n, seed=6, extra={"sex": sex})
    features = np.concatenate(list(x.values()))[order]
    features[:, 3] = subjects["subject_id"].str[1:].astype(int).to_numpy() / 100
    data = save_dataset(tmp_path / "prepared", features, subjects, "identity")
    data = load_prepared(tmp_path / "prepared")
    record = write_member(tmp_path / "member", identity_mlp(), member="seed0", seed=0)
    return data, record


def _evaluate(data, member_dir: Path, record, model_cfg: ModelConfig, selected: bool | None):
    return evaluate_member(
        data, member_dir, record, model_cfg, "mse", 7, FAST_PROBES, NoiseScaleConfig(), selected, "cpu", False
    )


def test_evaluate_member_scores_and_probes_the_test_split_aligned_with_ids(tmp_path: Path) -> None:
    """Row by row: per_subject.csv's loss of subject ``s<k>`` is mean(x²) of that subject's own features
    (feature 3 = k / 100); latents.npz holds each split's latents with its ids; the sex probe, latent
    metrics and test loss come from the test split (only there does feature 0 separate sex); the noise
    scale from the training split."""
    from ae_batch.evaluation.noise_scale import autoencoder_loss, noise_scale

    data, record = _mlp_member(tmp_path)
    member_dir = tmp_path / "member"
    result = _evaluate(data, member_dir, record, IDENTITY_MLP, None)
    feats = dict(zip(data.subjects["subject_id"], data.features.astype(np.float64), strict=True))
    split_of = dict(zip(data.subjects["subject_id"], data.subjects["split"], strict=True))

    per_subject = pd.read_csv(member_dir / "per_subject.csv", dtype={"subject_id": str})
    assert sorted(per_subject["subject_id"]) == sorted(
        data.subjects.loc[data.subjects["split"] != "train", "subject_id"]
    )
    for row in per_subject.itertuples():
        assert row.split == split_of[row.subject_id], f"{row.subject_id} listed under split {row.split}"
        want = float(np.mean(feats[row.subject_id] ** 2))
        assert row.recon_loss == pytest.approx(want, rel=1e-5), (
            f"per_subject.csv row {row.Index}: {row.subject_id} has loss {row.recon_loss}, "
            f"its own planted loss is {want} (misaligned with its id)"
        )

    latents = np.load(member_dir / "latents.npz")
    for split in ("val", "test"):
        ids = latents[f"{split}_ids"]
        assert list(ids) == list(data.split_subjects(split)["subject_id"]), f"latents.npz {split}_ids"
        np.testing.assert_allclose(
            latents[split],
            np.stack([feats[i] for i in ids]),
            rtol=1e-6,
            err_msg=f"{split} latents vs their ids",
        )

    test_x = data.split_features("test").astype(np.float64)
    test_losses = (test_x**2).mean(axis=1)
    assert result["test_recon_loss"] == pytest.approx(test_losses.mean(), rel=1e-5)
    assert result["test_recon_loss_std"] == pytest.approx(test_losses.std(ddof=1), rel=1e-4)
    val_x = data.split_features("val").astype(np.float64)
    assert result["val_recon_loss"] == pytest.approx((val_x**2).mean(), rel=1e-5)
    for key, want in latent_diversity(test_x).items():
        assert result[key] == pytest.approx(want, rel=1e-4, abs=1e-6), f"{key} is not the test latents'"

    want_folds = downstream_folds(test_x, data.split_subjects("test"), FAST_PROBES, "")
    folds = pd.read_csv(member_dir / "folds.csv")
    assert result["sex_auroc_mean"] > 0.95, (
        f"sex AUROC {result['sex_auroc_mean']:.3f}: the probe did not run on the test latents "
        f"(only they separate sex; expected {fold_summary(want_folds)['sex_auroc_mean']:.3f})"
    )
    assert len(folds) == len(want_folds)
    np.testing.assert_allclose(
        folds["value"], want_folds["value"], rtol=1e-6, err_msg="folds.csv vs test-split probe"
    )

    want_ns = noise_scale(
        identity_mlp(),
        torch.from_numpy(data.split_features("train")),
        autoencoder_loss("mse"),
        "auto",
        seed=0,
    )
    assert result["gradient_noise_scale"] == pytest.approx(want_ns.gradient_noise_scale, rel=1e-6), (
        "gradient noise scale is not the training split's"
    )
    on_disk = json.loads((member_dir / "eval.json").read_text())
    assert on_disk["member"] == "seed0" and on_disk["sex_auroc_mean"] == result["sex_auroc_mean"]


def test_evaluate_member_codebook_metrics_use_the_test_codes(tmp_path: Path) -> None:
    """A VQ model whose codebook is seeded on the test volumes (noise of varied brightness: many codes)
    while every validation volume is blank (one volume's 8 grid codes at most): the codebook metrics
    must equal those of the test split's codes, which differ from the validation split's."""
    rng = np.random.default_rng(7)
    n = {"train": 4, "val": 6, "test": 10}
    x = {
        "train": rng.uniform(0, 1, (n["train"], *VOLUME_SHAPE)),
        "val": np.zeros((n["val"], *VOLUME_SHAPE)),
        "test": rng.uniform(0, 1, (n["test"], *VOLUME_SHAPE)) * rng.uniform(0, 8, (n["test"], 1, 1, 1, 1)),
    }
    subjects, order = interleaved_subjects(n, seed=8)
    data = save_dataset(tmp_path / "prepared", np.concatenate(list(x.values()))[order], subjects, "sigmoid")
    torch.manual_seed(0)
    net = build_model(TINY_VQ, VOLUME_SHAPE, "sigmoid")
    net.initialise_codebook(torch.from_numpy(data.split_features("test")))
    record = write_member(tmp_path / "member", net, member="seed0", seed=0)
    result = _evaluate(data, tmp_path / "member", record, TINY_VQ, False)

    codebook = net.codebook.numpy()
    metrics = {
        s: codebook_metrics(net.quantize_indices(torch.from_numpy(data.split_features(s))).numpy(), codebook)
        for s in ("val", "test")
    }
    assert metrics["val"]["codebook_usage"] <= 8 / 16 < metrics["test"]["codebook_usage"], metrics
    for key, want in metrics["test"].items():
        assert result[key] == pytest.approx(want, rel=1e-6), (
            f"{key} = {result[key]} is not the test split's ({want}; the val split gives {metrics['val'][key]})"
        )


# ----------------------------------------------------------------------------------- encode_and_score


class _PlantedModel(torch.nn.Module):
    """recon 0 (MSE = mean(x²)), latent = (x₀, −x₀), codes = x₀ as an integer; +100 on every output in
    training mode, so scoring outside eval mode shows."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        v = x.reshape(len(x), -1)[:, 0] + (100.0 if self.training else 0.0)
        recon = torch.zeros_like(x) + (100.0 if self.training else 0.0)
        return AutoencoderOutput(recon, torch.stack([v, -v], 1), self.w.sum(), codes=v.long().unsqueeze(1))


def test_encode_and_score_keeps_each_subject_on_its_own_row() -> None:
    """Subject i has value v_i (distinct, shuffled); 23 subjects at batch size 5 (uneven last batch):
    row i must be subject i's loss v_i², latent (v_i, −v_i) and code v_i."""
    v = np.random.default_rng(9).permutation(23).astype(np.float32) + 1
    x = np.repeat(v[:, None], 3, axis=1)
    losses, latents, codes = encode_and_score(_PlantedModel().train(), x, "mse", batch_size=5)
    np.testing.assert_allclose(
        losses, v.astype(np.float64) ** 2, rtol=1e-6, err_msg="per-subject loss row order"
    )
    np.testing.assert_array_equal(latents, np.stack([v, -v], 1), err_msg="latent row order")
    assert codes is not None
    np.testing.assert_array_equal(codes[:, 0], v.astype(int), err_msg="code row order")


# ------------------------------------------------------------------------------------ collect_summary

GRID = [("paper", 8, 0), ("paper", 8, 1), ("paper", 32, 0), ("steps", 8, 0), ("steps", 32, 1)]


def _summary_members(tmp_path: Path) -> list[dict]:
    return [write_summary_member(tmp_path, i, *point) for i, point in enumerate(GRID)]


def _key(train: dict) -> str:
    return f"{train['dataset']}/{train['protocol']}/bs{train['batch_size']}/{train['member']}"


def test_collect_summary_builds_every_row_from_its_own_member_folder(tmp_path: Path) -> None:
    """Five members whose every number is planted distinct (1000·(i+1) + offset), given in shuffled
    order, with one MLflow run id each: every summary row, fold row and noise row must carry exactly the
    values of its own folder."""
    members = _summary_members(tmp_path)
    shuffled = [members[i] for i in (3, 0, 4, 2, 1)]
    run_ids = {_key(m["train"]): f"run-{i}" for i, m in enumerate(members)}
    summary, folds, noise = collect_summary([m["dir"] for m in shuffled], run_ids)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == len(members)
    by_grid = {(m["train"]["protocol"], m["train"]["batch_size"], m["train"]["seed"]): m for m in members}
    for row in summary.to_dict("records"):
        m = by_grid[(row["protocol"], row["batch_size"], row["seed"])]
        for source in ("train", "eval"):
            for col, want in m[source].items():
                if col in SUMMARY_COLUMNS and want is not None:
                    assert row[col] == want, (
                        f"summary row {_key(m['train'])}: {col} = {row[col]!r}, its {source}.json says {want!r}"
                    )
        assert row["mlflow_run_id"] == run_ids[_key(m["train"])], f"{_key(m['train'])}: wrong MLflow run id"
        mine = folds[
            (folds["protocol"] == row["protocol"])
            & (folds["batch_size"] == row["batch_size"])
            & (folds["seed"] == row["seed"])
        ]
        assert sorted(mine["value"]) == sorted(m["folds"]["value"]), (
            f"{_key(m['train'])}: fold rows from another folder"
        )
        ns = noise[
            (noise["protocol"] == row["protocol"])
            & (noise["batch_size"] == row["batch_size"])
            & (noise["seed"] == row["seed"])
        ]
        assert len(ns) == 1, f"{_key(m['train'])}: {len(ns)} noise rows"
        for col, want in m["noise"].items():
            assert ns[col].iloc[0] == want, f"{_key(m['train'])}: noise row {col} from another folder"


def test_collect_summary_rejects_an_eval_json_of_another_member(tmp_path: Path) -> None:
    """Swap the eval.json files of two members of one cell (seed 0 and seed 1 of paper/bs8): the join
    would silently give each the other's test loss, so it must be refused."""
    members = _summary_members(tmp_path)
    a, b = members[0]["dir"] / "eval.json", members[1]["dir"] / "eval.json"
    tmp = a.with_name("swap.json")
    shutil.move(a, tmp)
    shutil.move(b, a)
    shutil.move(tmp, b)
    with pytest.raises(ValueError, match="eval.json is of member 'seed1' but train.json of 'seed0'"):
        collect_summary([m["dir"] for m in members])


def test_collect_summary_rejects_an_eval_json_of_another_cell(tmp_path: Path) -> None:
    """seed0 of paper/bs8 and seed0 of paper/bs32 share the member name: eval.json records its whole
    grid point (dataset, protocol, batch size, member), so swapped files are caught."""
    members = _summary_members(tmp_path)
    a, b = members[0]["dir"] / "eval.json", members[2]["dir"] / "eval.json"
    tmp = a.with_name("swap.json")
    shutil.move(a, tmp)
    shutil.move(b, a)
    shutil.move(tmp, b)
    with pytest.raises(ValueError):
        collect_summary([m["dir"] for m in members])
