"""Stacked training is the same math as training each member alone.

For each model kind (MLP, conv AE, VQ-VAE), K = 3 members with different seeds and learning rates are
trained stacked for 2 epochs at batch sizes 1 and 16, and each is compared with the same member trained
alone by the plain reference loop (``ae_batch.training.reference``: the plain nn.Module, torch's fused
Adam, the member's own (seed, epoch) shuffle order): weights within 1e-5, the same best epoch, and the
validation losses within 1e-6. Rounding differs (batched vs single matmuls), nothing else may.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from ae_batch.config import ProtocolConfig
from ae_batch.models.components import MLPAutoencoder
from ae_batch.models.conv import ConvAutoencoder3d
from ae_batch.models.stacked import stack_members
from ae_batch.models.vq import VQVAE3d
from ae_batch.training.loop import fit_group
from ae_batch.training.protocols import budget_for
from ae_batch.training.reference import train_alone

SEEDS = [0, 1, 0]  # two members share a seed (one initial state, one order) and differ in learning rate
LRS = [1e-3, 3e-3, 5e-4]


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ehr(tiny_prepared: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from ae_batch.data.prepared import load_prepared

    data = load_prepared(tiny_prepared["events"])
    return torch.from_numpy(data.split_features("train")), torch.from_numpy(data.split_features("val"))


def _volumes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, 12, generator=g)


def _models(make: Callable[[], nn.Module]) -> list[nn.Module]:
    out = []
    for seed in SEEDS:  # the members' initial states: one per seed, as the init stage makes them
        torch.manual_seed(seed)
        out.append(make())
    return out


def _check(make: Callable[[], nn.Module], x: torch.Tensor, xv: torch.Tensor, batch_size: int) -> None:
    plains = _models(make)
    budget = budget_for(ProtocolConfig("p", "epochs", epochs=2), batch_size, len(x))
    stacked = fit_group(plains[0], [p.state_dict() for p in plains], x, xv, SEEDS, LRS, budget)
    worst = 0.0
    for k, (plain, seed, lr) in enumerate(zip(plains, SEEDS, LRS, strict=True)):
        alone = train_alone(copy.deepcopy(plain), x, xv, seed, budget, lr)
        got = stacked.members[k]
        assert got.best_epoch == alone.best_epoch, f"member {k}"
        vals = [row["val_loss"] for row in got.history]
        assert len(vals) == len(alone.val_losses) == 2
        assert max(abs(a - b) for a, b in zip(vals, alone.val_losses, strict=True)) < 1e-6, f"member {k}"
        for name, ref in alone.state_dict.items():
            if ref.is_floating_point():
                diff = (got.state_dict[name] - ref).abs().max().item()
                worst = max(worst, diff)
                assert diff < 1e-5, f"member {k}, {name}: {diff:.2e}"
        moved = max((got.state_dict[n] - plain.state_dict()[n]).abs().max().item() for n in ref_keys(plain))
        assert moved > 1e-3, f"member {k} did not train"
    # the members really differ (different seeds or learning rates): the comparison has teeth
    a, b = stacked.members[0].state_dict, stacked.members[2].state_dict
    assert max((a[n] - b[n]).abs().max().item() for n in ref_keys(plains[0])) > 1e-4


def ref_keys(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters()]


@pytest.mark.parametrize("batch_size", [1, 16])
def test_mlp_members_match_training_alone(tiny_prepared: Any, batch_size: int) -> None:
    x, xv = _ehr(tiny_prepared)
    _check(lambda: MLPAutoencoder(x.shape[1], (16, 8), 4), x, xv, batch_size)


@pytest.mark.parametrize("batch_size", [1, 16])
def test_conv_members_match_training_alone(batch_size: int) -> None:
    x, xv = _volumes(32, 0), _volumes(8, 1)
    _check(lambda: ConvAutoencoder3d((1, 12, 12, 12), (4, 8), 6), x, xv, batch_size)


@pytest.mark.parametrize("batch_size", [1, 16])
def test_vq_members_match_training_alone(batch_size: int) -> None:
    x, xv = _volumes(32, 0), _volumes(8, 1)

    def make() -> nn.Module:
        model = VQVAE3d((1, 12, 12, 12), (4, 8), embedding_dim=4, codebook_size=8)
        model.initialise_codebook(x[:16])  # as the init stage does: from fixed training volumes
        return model

    _check(make, x, xv, batch_size)


def test_stacked_forward_equals_each_plain_forward() -> None:
    torch.manual_seed(0)
    plains = [ConvAutoencoder3d((1, 10, 9, 8), (4, 8), 5) for _ in range(3)]
    stack = stack_members(plains[0], [p.state_dict() for p in plains])
    x = torch.rand(6, 1, 10, 9, 8)
    idx = torch.stack([torch.randperm(6)[:4] for _ in range(3)])
    recon, _ = stack.member_losses(stack.stack_inputs(x, idx), "mse")
    for k, plain in enumerate(plains):
        xb = x[idx[k]]
        expected = torch.nn.functional.mse_loss(plain(xb).recon, xb)
        assert recon[k].item() == pytest.approx(expected.item(), rel=1e-6)
        exported = stack.member_state_dict(k)
        assert all(torch.equal(exported[n], t) for n, t in plain.state_dict().items())
