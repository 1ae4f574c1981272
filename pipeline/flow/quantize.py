"""Flow storage quantisation, two-stream convention (TSN's dense_flow, ST-ResNet).

Flow is clipped to [-bound, bound] px (default 20), then either
- uint8: q = round(255 * (f + bound) / (2 * bound)), so one step is 2 * bound / 255 px
  (0.157 px at bound 20) and the round-trip error for |f| <= bound is at most half a step
  (bound / 255 = 0.078 px); zero flow comes back as +0.078 px (127.5 rounds to 128), the known
  bias of the convention; or
- float16: the clipped value itself; round-trip error <= 2^-11 relative (<= 0.0078 px below 32 px).
Values beyond the bound come back as +-bound. numpy in -> numpy out, torch in -> torch out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.errors import FlowError

DTYPES = ("uint8", "float16")


def quantize_flow(flow: Any, *, bound: float = 20.0, dtype: str = "uint8") -> Any:
    """Float flow (any shape) -> uint8 or float16 of the same shape (see the module docstring)."""
    _check(bound, dtype)
    if isinstance(flow, torch.Tensor):
        if torch.isnan(flow).any():
            raise FlowError(f"quantize_flow: flow contains NaN (shape {tuple(flow.shape)})")
        f = flow.float().clamp(-bound, bound)
        if dtype == "float16":
            return f.half()
        return torch.round((f + bound) * (255.0 / (2 * bound))).to(torch.uint8)
    f = np.asarray(flow, dtype=np.float32)
    if np.isnan(f).any():
        raise FlowError(f"quantize_flow: flow contains NaN (shape {f.shape})")
    f = np.clip(f, -bound, bound)
    if dtype == "float16":
        return f.astype(np.float16)
    return np.round((f + bound) * np.float32(255.0 / (2 * bound))).astype(np.uint8)


def dequantize_flow(q: Any, *, bound: float = 20.0, dtype: str = "uint8") -> Any:
    """Inverse of quantize_flow: float32 pixels, same shape and array type as `q`."""
    _check(bound, dtype)
    step = 2 * bound / 255.0
    if isinstance(q, torch.Tensor):
        return q.float() if dtype == "float16" else q.float() * step - bound
    q = np.asarray(q)
    return q.astype(np.float32) if dtype == "float16" else (q.astype(np.float32) * np.float32(step) - np.float32(bound))


def _check(bound: float, dtype: str) -> None:
    if dtype not in DTYPES:
        raise FlowError(f"flow quantisation dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not bound > 0:
        raise FlowError(f"flow quantisation bound must be > 0, got {bound!r}")
