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
    """The autocast dtype for training on `device`: bfloat16 where the GPU has it (and always on
    CPU), else float16.

    bfloat16 keeps float32's range, so it needs no GradScaler, whose `step` reads the inf check back
    to the host: one device sync per optimizer step that float16 training pays.
    """
    if device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls/convs run natively (elsewhere oneDNN emulates them, slower)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_on(device: torch.device, requested: bool) -> tuple[bool, str]:
    """(autocast on?, a note when it was asked for and is off). On CPU only with native bf16: there
    the spatial heads train 1.2-1.6x faster (benchmarks/README.md), the light heads the same."""
    if not requested:
        return False, ""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return True, ""
    return False, f"amp ignored: no native bf16 on this {device.type.upper()} (AVX512-BF16/AMX), training in float32"


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A GradScaler that is on only for float16 autocast (a disabled one passes losses through)."""
    return torch.amp.GradScaler("cuda", enabled=amp and amp_dtype(device) == torch.float16)
