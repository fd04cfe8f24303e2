"""Training throughput: ae_batch's own training path vs a minimal hand-written PyTorch loop.

Same model (same initial weights), same data, same optimizer (Adam), same shuffle order, same thread
count; validation off in both. Prints samples/s for each and the ratio, measured side by side in one run
(interleaved repeats, best of N, so background load hits both alike).

    python benchmarks/train_throughput.py            # EHR MLP and MRI conv AE, batch sizes 1 8 32 128
    python benchmarks/train_throughput.py --quick    # fewer samples, for a smoke check
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.nn import functional as F  # noqa: N812

from ae_batch.config import ModelConfig
from ae_batch.data.modules import shuffle_order
from ae_batch.models.factory import build_model
from ae_batch.stages.train import build_trainer, quiet_lightning


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize()


def hand_loop(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int, epochs: int, seed: int = 0, fused: bool = False
) -> float:
    """The reference: randperm + tensor slicing + zero_grad/forward/backward/step. Returns samples/s.

    ``fused=False`` is torch's default Adam; ``fused=True`` the fused kernel ae_batch uses, so the
    ratio against it isolates the training loop from the optimizer implementation.
    """
    model = model.to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    _sync(x)
    start = time.perf_counter()
    for epoch in range(epochs):
        for idx in torch.split(shuffle_order(len(x), seed, epoch).to(x.device), batch_size):
            xb = x[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(xb).recon, xb)
            loss.backward()
            opt.step()
    _sync(x)
    return len(x) * epochs / (time.perf_counter() - start)


def ae_batch_path(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int, epochs: int, seed: int = 0
) -> tuple[float, float]:
    """ae_batch's training path: AutoencoderSystem + TensorDataModule under a Lightning Trainer.

    Returns (samples/s over the training epochs as the system times them, samples/s including the
    one-off ``Trainer.fit`` setup and teardown).
    """

    from ae_batch.data.modules import TensorDataModule
    from ae_batch.models.systems import AutoencoderSystem

    system = AutoencoderSystem(model, learning_rate=1e-3, max_epochs=epochs, progress=False)
    module = TensorDataModule(x, x[:8], batch_size=batch_size, seed=seed)
    trainer = build_trainer(epochs, "gpu" if x.is_cuda else "cpu", validate=False)
    start = time.perf_counter()
    trainer.fit(system, datamodule=module)
    total = time.perf_counter() - start
    return len(x) * epochs / system._train_seconds, len(x) * epochs / total


def measure(
    name: str, make_model, x: torch.Tensor, batch_sizes: list[int], samples: int, repeats: int
) -> list[dict]:
    rows = []
    for bs in batch_sizes:
        # At least `samples` samples and 30 optimizer steps, so large batches are timed long enough too.
        epochs = max(1, -(-max(samples, 30 * bs) // len(x)))
        best = {"loop": 0.0, "loop_fused": 0.0, "ae_batch": 0.0, "ae_batch_with_setup": 0.0}
        for _ in range(repeats):
            base = make_model()
            best["loop"] = max(best["loop"], hand_loop(copy.deepcopy(base), x, bs, epochs))
            best["loop_fused"] = max(
                best["loop_fused"], hand_loop(copy.deepcopy(base), x, bs, epochs, fused=True)
            )
            steady, total = ae_batch_path(copy.deepcopy(base), x, bs, epochs)
            best["ae_batch"] = max(best["ae_batch"], steady)
            best["ae_batch_with_setup"] = max(best["ae_batch_with_setup"], total)
        ratio = best["ae_batch"] / best["loop"]
        ratio_fused = best["ae_batch"] / best["loop_fused"]
        rows.append(
            {"model": name, "batch_size": bs, **best, "ratio": ratio, "ratio_vs_fused_loop": ratio_fused}
        )
        print(
            f"{name:<9} bs {bs:>4} ({epochs:>3} ep): loop {best['loop']:>7.0f}/s  loop+fused {best['loop_fused']:>7.0f}/s"
            f"  ae_batch {best['ae_batch']:>7.0f}/s  ratio {ratio:.3f}  vs fused loop {ratio_fused:.3f}"
            f"  (ratio incl. Trainer setup {best['ae_batch_with_setup'] / best['loop']:.3f})",
            flush=True,
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda (data and model on that device)")
    p.add_argument("--models", nargs="+", default=["ehr_mlp", "mri_conv"])
    p.add_argument("--mri-size", type=int, default=32, help="MRI volume edge (32 in the default study)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    quiet_lightning()
    g = torch.Generator().manual_seed(0)
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__} on {name}, {a.threads} thread(s); best of {a.repeats} interleaved repeats"
    )
    # EHR: the default study's shape (~290 binary phenotypes, 1,200 training subjects), MLP 256-128-32.
    ehr = (torch.rand(1200, 290, generator=g) < 0.14).float().to(dev)
    mlp_cfg = ModelConfig(kind="mlp")

    def mlp():
        torch.manual_seed(0)
        return build_model(mlp_cfg, (290,), "sigmoid")

    if "ehr_mlp" in a.models:
        measure("ehr_mlp", mlp, ehr, a.batch_sizes, 2400 if a.quick else 6000, a.repeats)
    # MRI: 32³ volumes, conv AE 8-16-32 → 32.
    size = a.mri_size
    mri = torch.rand(128, 1, size, size, size, generator=g).to(dev)
    conv_cfg = ModelConfig(kind="conv")

    def conv():
        torch.manual_seed(0)
        return build_model(conv_cfg, (1, size, size, size), "sigmoid")

    if "mri_conv" in a.models:
        samples = 256 if a.quick else 640
        measure("mri_conv", conv, mri, a.batch_sizes, samples * (20 if dev.type == "cuda" else 1), a.repeats)


if __name__ == "__main__":
    main()
