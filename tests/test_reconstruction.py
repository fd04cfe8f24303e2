"""encode_and_score: per-subject losses, latents and codes come back in input order, batch by batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ae_batch.evaluation.reconstruction import encode_and_score
from ae_batch.models.components import AutoencoderOutput


class OffsetModel(nn.Module):
    """Reconstructs x + x[:, :1]: subject i's MSE is exactly x[i, 0]² (every feature is off by x[i, 0]).

    Latent = the first two features, codes = round(x[:, 0]): each output identifies its subject. Records
    the batch sizes it sees and whether it was in eval mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        self.batches.append(len(x))
        self.modes.append(self.training)
        flat = x.flatten(1)
        return AutoencoderOutput(
            recon=x + flat[:, :1].reshape(-1, *([1] * (x.dim() - 1))),
            latent=flat[:, :2],
            aux_loss=torch.zeros(()),
            codes=flat[:, :1].round().long(),
        )


def planted(n: int = 10, shape: tuple[int, ...] = (6,)) -> np.ndarray:
    """Subject i's features all equal v_i = i + 1 except feature 1 (= -i), in a shuffled subject order."""
    v = np.random.default_rng(0).permutation(n).astype(np.float32) + 1.0
    x = np.repeat(v[:, None], int(np.prod(shape)), axis=1)
    x[:, 1] = -v
    return x.reshape(n, *shape)


@pytest.mark.parametrize("shape", [(6,), (1, 2, 3, 1)])
def test_per_subject_losses_latents_and_codes_in_input_order(shape: tuple[int, ...]) -> None:
    """Planted per-subject MSE v_i² with an uneven last batch (10 = 3 + 3 + 3 + 1): a shuffle, reversed
    batch order or misaligned concatenation moves some v_i² to another row and fails."""
    x = planted(shape=shape)
    v = x.reshape(len(x), -1)[:, 0].astype(np.float64)
    model = OffsetModel().train()
    losses, latents, codes = encode_and_score(model, x, "mse", batch_size=3)
    np.testing.assert_allclose(losses, v**2, rtol=1e-6)
    np.testing.assert_array_equal(latents, np.stack([v, -v], axis=1))
    assert codes is not None
    np.testing.assert_array_equal(codes[:, 0], v.astype(int))
    assert model.batches == [3, 3, 3, 1]  # the fixed evaluation batch size
    assert not any(model.modes)  # eval mode throughout


def test_results_do_not_depend_on_the_evaluation_batch_size() -> None:
    x = planted(n=13)
    ref = encode_and_score(OffsetModel(), x, batch_size=256)
    for b in (1, 4, 13):
        got = encode_and_score(OffsetModel(), x, batch_size=b)
        for a, r in zip(got, ref, strict=True):
            np.testing.assert_array_equal(a, r)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        encode_and_score(OffsetModel(), planted(), batch_size=0)
    with pytest.raises(ValueError, match="no subjects"):
        encode_and_score(OffsetModel(), planted()[:0])
