"""Device choice: CUDA when present, else CPU, always overridable."""

from __future__ import annotations

import torch

from pipeline.errors import ConfigError


def pick_device(requested: str | None = "auto") -> torch.device:
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available here")
    return device
