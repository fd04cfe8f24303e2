"""Which device a job runs on: the one place ``training.accelerator`` is interpreted."""

from __future__ import annotations

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def resolve_device(accelerator: str = "auto") -> str:
    """``cuda``, ``mps`` or ``cpu``: ``auto`` takes CUDA when available, then MPS, else the CPU; ``gpu`` and
    ``cuda`` mean CUDA and fail clearly without it."""
    import torch

    if accelerator not in ACCELERATORS:
        raise ValueError(f"training.accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            from ae_batch.errors import ConfigError

            raise ConfigError(f"training.accelerator is '{accelerator}' but no CUDA device is available")
        return "cuda"
    if accelerator == "mps":
        return "mps"
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
    return "cpu"
