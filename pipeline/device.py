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


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for training on `device`: bfloat16 where the GPU has it, else float16.

    bfloat16 keeps float32's range, so it needs no GradScaler, whose `step` reads the inf check back
    to the host: one device sync per optimizer step that float16 training pays.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A GradScaler that is on only for float16 autocast (a disabled one passes losses through)."""
    return torch.amp.GradScaler("cuda", enabled=amp and amp_dtype(device) == torch.float16)
