"""The one place where the compute device is chosen."""
from __future__ import annotations

import torch

from compress.errors import DeviceError


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/"auto" -> cuda if present, else cpu. "cuda" without a GPU is an error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = str(name).lower()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was asked for, but this machine has no usable NVIDIA GPU "
                "(torch.cuda.is_available() is False). Choose the CPU instead.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError("Apple MPS was asked for, but is not available here. Choose the CPU.")
        return torch.device("mps")
    raise DeviceError(f"Unknown device {name!r}: use 'cpu', 'cuda' or 'auto'.")


def available_devices() -> list[str]:
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.insert(0, "cuda")
    return devs
