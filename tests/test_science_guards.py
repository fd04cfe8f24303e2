"""Tests that fail when the science is wrong, not only when the code crashes (part 1: training side).

Each test plants data (or weights) whose correct result is known in advance, so a plausible mistake
changes a number the test checks:

* the VQ loss's stop-gradients, plain and stacked, against hand-computed gradients;
* the VQ codebook is seeded from training subjects only (``init``);
* the PCA baseline is fitted on training subjects only (``baselines``).

Part 2 (evaluation and aggregation) is ``test_science_guards_eval.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from guard_helpers import (
    TINY_VQ,
    VOLUME_SHAPE,
    interleaved_subjects,
    save_dataset,
)
from sklearn.decomposition import PCA

from ae_batch.config import DownstreamConfig, ModelConfig
from ae_batch.evaluation.downstream import downstream_folds, fold_summary
from ae_batch.models.factory import build_model
from ae_batch.models.losses import per_sample_loss
from ae_batch.models.stacked import StackedVQVAE
from ae_batch.models.vq import VectorQuantizer, VQVAE3d
from ae_batch.stages.baselines import compute_baselines
from ae_batch.stages.init import CODEBOOK_INIT_SUBJECTS, init_model

FAST_PROBES = DownstreamConfig(folds=3, repeats=2, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------- VQ gradients

BETA = 0.25
CODEBOOK = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
# Four encoder vectors (D = 2) on a 4×1×1 grid; nearest codes 0, 1, 1, 2 (code 1 is hit twice).
FLAT = torch.tensor([[0.1, 0.2], [0.9, -0.1], [0.8, 0.3], [0.2, 0.7]], dtype=torch.float64)
NEAREST = [0, 1, 1, 2]


def _hand_gradients(flat: torch.Tensor, codebook: torch.Tensor, upstream: torch.Tensor, nearest: list[int]):
    """Gradients of ``aux + (q_st * upstream).sum()`` by hand, for
    ``aux = mse(e, sg[z]) + β mse(z, sg[e])`` and ``q_st = z + sg[e - z]`` (van den Oord et al. 2017):

    * codebook: only the codebook term, ``2 (e_k − z_i) / (M D)`` summed over the rows i assigned to k;
    * encoder: the straight-through upstream gradient unchanged plus ``β · 2 (z − e) / (M D)``."""
    m, d = flat.shape
    q = codebook[nearest]
    g_code = torch.zeros_like(codebook)
    g_code.index_add_(0, torch.tensor(nearest), 2 * (q - flat) / (m * d))
    g_enc = upstream + BETA * 2 * (flat - q) / (m * d)
    loss = (1 + BETA) * (q - flat).pow(2).mean()
    return g_code, g_enc, loss


def test_plain_vq_loss_gradients_match_hand_computation() -> None:
    """The codebook learns only from ``||e − sg[z]||²``; the encoder from ``β ||z − sg[e]||²`` plus the
    straight-through reconstruction gradient. Swapping the stop-gradients scales the codebook's
    gradient by β and the encoder's commitment gradient by 1/β, which these exact values catch."""
    vq = VectorQuantizer(3, 2, commitment_cost=BETA).double().train()
    with torch.no_grad():
        vq.embedding.copy_(CODEBOOK)
        vq.initialised.fill_(True)
    z = FLAT.t().reshape(1, 2, 4, 1, 1).clone().requires_grad_(True)  # channels first, grid 4×1×1
    upstream = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(1, 2, 4, 1, 1)
    q_st, loss, idx = vq(z)
    (loss + (q_st * upstream).sum()).backward()
    want_code, want_enc, want_loss = _hand_gradients(FLAT, CODEBOOK, upstream.reshape(2, 4).t(), NEAREST)
    assert idx.flatten().tolist() == NEAREST
    torch.testing.assert_close(q_st.detach().reshape(2, 4).t(), CODEBOOK[NEAREST], msg="q_st is not e")
    torch.testing.assert_close(loss.detach(), want_loss, msg="VQ loss value")
    torch.testing.assert_close(
        vq.embedding.grad, want_code, msg=lambda m: f"codebook gradient is not the codebook term's\n{m}"
    )
    torch.testing.assert_close(
        z.grad.reshape(2, 4).t(),
        want_enc,
        msg=lambda m: f"encoder gradient is not straight-through + β·commitment\n{m}",
    )


def _tiny_vq(seed: int) -> VQVAE3d:
    torch.manual_seed(seed)
    return VQVAE3d(VOLUME_SHAPE, (2, 4), embedding_dim=2, codebook_size=3, commitment_cost=BETA).double()


def test_stacked_vq_loss_gradients_match_hand_computation() -> None:
    """``StackedVQVAE._quantise`` (what training runs) has its own copy of the loss: each member's slice
    of the stacked codebook and of the encoder output must get the hand-computed gradients."""
    stack = StackedVQVAE(_tiny_vq(0), 2).double()
    codebooks = [CODEBOOK, CODEBOOK + 0.05]  # distinct per member
    flats = [FLAT, FLAT.flip(1).flip(0) * 0.9]  # their nearest codes are computed below
    with torch.no_grad():
        for k in range(2):
            stack.p("quantizer.embedding")[k].copy_(codebooks[k])
    # [B=1, K*D, 4, 1, 1]: channel k*D + d is member k's dimension d.
    z = torch.cat([f.t().reshape(1, 2, 4, 1, 1) for f in flats], dim=1).clone().requires_grad_(True)
    upstream = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 4, 4, 1, 1)
    q_st, aux = stack._quantise(z)
    (aux.sum() + (q_st * upstream).sum()).backward()
    for k in range(2):
        nearest = torch.cdist(flats[k], codebooks[k]).argmin(1).tolist()
        assert len(set(nearest)) > 1, "planted vectors should use several codes"
        want_code, want_enc, want_loss = _hand_gradients(
            flats[k], codebooks[k], upstream[0, 2 * k : 2 * k + 2].reshape(2, 4).t(), nearest
        )
        torch.testing.assert_close(aux[k].detach(), want_loss, msg=f"member {k}: VQ loss value")
        torch.testing.assert_close(
            stack.p("quantizer.embedding").grad[k],
            want_code,
            msg=lambda m, k=k: f"member {k}: stacked codebook gradient is not the codebook term's\n{m}",
        )
        torch.testing.assert_close(
            z.grad[0, 2 * k : 2 * k + 2].reshape(2, 4).t(),
            want_enc,
            msg=lambda m, k=k: (
                f"member {k}: stacked encoder gradient is not straight-through + β·commitment\n{m}"
            ),
        )


def test_stacked_vq_gradients_equal_plain_vq_gradients() -> None:
    """Whole-model gradients (reconstruction + VQ loss) of each stacked member equal the plain model's,
    parameter by parameter: a loss that differs only in where gradients flow has equal values, so only
    a gradient comparison catches it."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, *VOLUME_SHAPE, generator=g, dtype=torch.float64)
    plains = []
    for seed in (0, 1):
        net = _tiny_vq(seed)
        net.initialise_codebook(x)  # codes inside the encoder's output range: every code term is live
        plains.append(net)
    stack = StackedVQVAE(
        plains[0], 2
    ).double()  # float64 before loading: stack_members would round to float32
    for k, net in enumerate(plains):
        stack.load_member(k, net.state_dict())
    recon, aux = stack.member_losses(stack.repeat_inputs(x), "mse")
    (recon + aux).sum().backward()
    for k, net in enumerate(plains):
        out = net.train()(x)
        torch.testing.assert_close(aux[k].detach(), out.aux_loss.detach(), msg=f"member {k}: aux loss value")
        (per_sample_loss(out.recon, x, "mse").mean() + out.aux_loss).backward()
        for name, p in net.named_parameters():
            torch.testing.assert_close(
                stack.p(name).grad[k],
                p.grad,
                rtol=1e-7,
                atol=1e-10,
                msg=lambda m, k=k, name=name: (
                    f"member {k}: stacked gradient of {name} differs from plain\n{m}"
                ),
            )


# ------------------------------------------------------------------------------ codebook seeding (init)


def _volumes_by_split(seed: int) -> dict[str, np.ndarray]:
    """Each volume one grey level plus 1% voxel noise: training levels in [0, 0.2], validation in
    [4, 5], test in [8, 10] (far outside [0, 1], because a freshly initialised encoder's output is
    dominated by its biases and moves little across [0, 1]): encoder outputs, and so k-means++-seeded
    codes, differ by split. 70 training subjects, so "the first 64" is a real choice."""
    rng = np.random.default_rng(seed)
    ranges = {"train": (0.0, 0.2, 70), "val": (4.0, 5.0, 6), "test": (8.0, 10.0, 20)}
    return {
        s: rng.uniform(lo, hi, (n, 1, 1, 1, 1)) + 0.01 * rng.standard_normal((n, *VOLUME_SHAPE))
        for s, (lo, hi, n) in ranges.items()
    }


def _seeded_codebook(seed: int, volumes: np.ndarray) -> torch.Tensor:
    torch.manual_seed(seed)
    net = build_model(TINY_VQ, VOLUME_SHAPE, "sigmoid")
    net.initialise_codebook(torch.from_numpy(volumes.astype(np.float32)))
    return net.codebook.clone()


def test_init_seeds_the_codebook_from_the_first_training_volumes(tmp_path: Path) -> None:
    """Plant train/val/test volumes of disjoint intensity, shuffled together in subjects.csv: the saved
    codebook must equal k-means++ seeding on the first 64 *training* volumes (same torch seed), and every
    code must lie near a training encoder output, not a test one."""
    volumes = _volumes_by_split(0)
    counts = {s: len(v) for s, v in volumes.items()}
    subjects, order = interleaved_subjects(counts, seed=1)
    features = np.concatenate(list(volumes.values()))[order]
    data = save_dataset(tmp_path / "prepared", features, subjects, "sigmoid")
    seed = 3
    init_model(tmp_path / "prepared", tmp_path / "init.pt", seed, TINY_VQ)
    saved = torch.load(tmp_path / "init.pt", weights_only=False)["state_dict"]["quantizer.embedding"]
    train_first = data.split_features("train")[:CODEBOOK_INIT_SUBJECTS]
    want = _seeded_codebook(seed, train_first)
    from_test = _seeded_codebook(seed, data.split_features("test")[:CODEBOOK_INIT_SUBJECTS])
    assert not torch.allclose(want, from_test, atol=1e-3), "planted splits should seed different codebooks"
    torch.testing.assert_close(
        saved, want, msg=lambda m: f"codebook is not seeded from the first 64 training volumes\n{m}"
    )
    # Independent of the RNG: each code is (up to 1% noise) one training encoder vector.
    torch.manual_seed(seed)
    net = build_model(TINY_VQ, VOLUME_SHAPE, "sigmoid")
    with torch.no_grad():
        enc = {
            s: VectorQuantizer._flatten(net._encode_grid(torch.from_numpy(data.split_features(s))))
            for s in ("train", "test")
        }
    to_train = torch.cdist(saved, enc["train"]).min(1).values
    to_test = torch.cdist(saved, enc["test"]).min(1).values
    assert (to_train < to_test).all(), (
        f"codes lie nearer the test subjects' encoder outputs than the training ones': "
        f"distance to train {to_train.tolist()}, to test {to_test.tolist()}"
    )


# ------------------------------------------------------------------------------------ PCA baseline


def test_pca_baseline_is_fitted_on_training_subjects(tmp_path: Path) -> None:
    """Training subjects vary mostly along feature 0, test subjects along feature 1; the test subjects'
    sex is the sign of feature 0 (small variance in test). A one-component PCA fitted on training data
    keeps feature 0 (AUROC ≈ 1); fitted on test data it keeps feature 1, unrelated to sex (AUROC ≈ 0.5)."""
    rng = np.random.default_rng(0)
    n = {"train": 60, "val": 10, "test": 40}
    sex = {s: rng.permutation(np.arange(k) % 2).astype(float) for s, k in n.items()}
    scale = {"train": (3.0, 0.3, 0.1), "val": (1.0, 1.0, 0.1), "test": (0.1, 3.0, 0.1)}
    x = {s: rng.normal(0, 1, (k, 3)) * np.array(scale[s]) for s, k in n.items()}
    x["test"][:, 0] += np.where(sex["test"] == 1, 0.5, -0.5)
    subjects, order = interleaved_subjects(n, seed=2, extra={"sex": sex})
    data = save_dataset(tmp_path / "prepared", np.concatenate(list(x.values()))[order], subjects, "identity")
    model = ModelConfig(kind="mlp", hidden_dims=(4,), latent_dim=1)  # latent width 1 → PCA with 1 component
    compute_baselines(tmp_path / "prepared", tmp_path / "out", "d", model, FAST_PROBES)

    train_x = data.split_features("train").astype(np.float64)
    test_x = data.split_features("test").astype(np.float64)
    test_subjects = data.split_subjects("test")
    expected = {
        "raw": downstream_folds(test_x, test_subjects, FAST_PROBES, ""),
        "pca1": downstream_folds(
            PCA(1, random_state=0).fit(train_x).transform(test_x), test_subjects, FAST_PROBES, ""
        ),
    }
    wrong = downstream_folds(
        PCA(1, random_state=0).fit(test_x).transform(test_x), test_subjects, FAST_PROBES, ""
    )
    assert fold_summary(wrong)["sex_auroc_mean"] < 0.8, "planted test-set PCA should not separate sex"

    rows = {
        r["representation"]: r for r in json.loads((tmp_path / "out" / "baselines.json").read_text())["rows"]
    }
    assert set(rows) == {"raw", "pca1"}
    assert rows["pca1"]["sex_auroc_mean"] > 0.95, (
        f"PCA baseline AUROC {rows['pca1']['sex_auroc_mean']:.3f}: not the training subjects' principal "
        f"direction (training-fit PCA gives {fold_summary(expected['pca1'])['sex_auroc_mean']:.3f}, "
        f"test-fit {fold_summary(wrong)['sex_auroc_mean']:.3f})"
    )
    folds = pd.read_csv(tmp_path / "out" / "baseline_folds.csv")
    for name, want in expected.items():
        got = folds[folds["representation"] == name].reset_index(drop=True)
        np.testing.assert_allclose(
            got["value"],
            want["value"],
            rtol=1e-9,
            err_msg=f"{name}: per-fold scores differ from the recomputation",
        )
        assert rows[name]["sex_auroc_mean"] == pytest.approx(fold_summary(want)["sex_auroc_mean"], rel=1e-9)
