"""What every flow method shares: input checks, grey conversion, frames -> pairs, batching.

A method only implements `_flow(i0, i1)` on grey float32 pairs (N, H, W) scaled 0..255 (OpenCV's
convention: uint8 frames as they are, float frames in [0, 1] times 255) and returns (N, 2, H, W).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.errors import FlowError

# ITU-R BT.601 luma, the weights of cv2.COLOR_RGB2GRAY
_LUMA = (0.299, 0.587, 0.114)
MIN_SIDE = 3  # OpenCV's gradients need 3 pixels per side


class FlowMethod:
    """Callable flow method: `method(frames)` for clips, `method.pairs(prev, nxt)` for pairs.

    frames: (B, T, H, W[, 3]) uint8 or float, numpy or torch, RGB or grey.
    Returns float32 flow in pixels, x then y, from frame t to t+1, as a torch tensor on
    `self.device`: (B, T-1, 2, H, W) for clips, (B, 2, H, W) for pairs.
    """

    name: str = ""

    def __init__(self, *, device: torch.device, params: dict[str, Any], max_batch: int = 32):
        if max_batch < 1:
            raise FlowError(f"max_batch must be >= 1, got {max_batch}")
        self.device = device
        self.params = dict(params)
        self.max_batch = int(max_batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, params={self.params})"

    def __call__(self, frames: Any) -> torch.Tensor:
        grey = self._grey(frames, clip=True, what="frames")
        b, t, h, w = grey.shape
        if t < 2:
            raise FlowError(f"frames: need at least 2 frames per clip for flow, got shape {tuple(grey.shape)}")
        prev = grey[:, :-1].reshape(-1, h, w)
        nxt = grey[:, 1:].reshape(-1, h, w)
        return self._batched(prev, nxt).reshape(b, t - 1, 2, h, w)

    def pairs(self, prev: Any, nxt: Any) -> torch.Tensor:
        i0 = self._grey(prev, clip=False, what="prev")
        i1 = self._grey(nxt, clip=False, what="nxt")
        if i0.shape != i1.shape:
            raise FlowError(f"prev and nxt differ in shape: {_shape(prev)} vs {_shape(nxt)}")
        return self._batched(i0, i1)

    def _flow(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _batched(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        if i0.shape[0] <= self.max_batch:
            return self._flow(i0, i1)
        return torch.cat(
            [self._flow(i0[s : s + self.max_batch], i1[s : s + self.max_batch]) for s in range(0, len(i0), self.max_batch)]
        )

    def _grey(self, x: Any, *, clip: bool, what: str) -> torch.Tensor:
        """(B[, T], H, W[, 3]) uint8/float -> float32 grey 0..255 on self.device, checked."""
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        if not isinstance(t, torch.Tensor):
            raise FlowError(f"{what}: expected a numpy array or torch tensor, got {type(x).__name__}")
        lead = 2 if clip else 1
        layout = "(B, T, H, W[, 3])" if clip else "(B, H, W[, 3])"
        colour = t.ndim == lead + 3 and t.shape[-1] == 3
        if not (colour or t.ndim == lead + 2):
            raise FlowError(f"{what}: expected shape {layout}, got {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise FlowError(f"{what}: empty batch, shape {tuple(t.shape)}")
        h, w = (t.shape[-3], t.shape[-2]) if colour else (t.shape[-2], t.shape[-1])
        if min(h, w) < MIN_SIDE:
            raise FlowError(f"{what}: frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            scale = 1.0
        elif t.is_floating_point():
            scale = 255.0
        else:
            raise FlowError(f"{what}: expected uint8 or float frames, got {t.dtype}")
        t = t.to(self.device, non_blocking=True)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise FlowError(f"{what}: frames contain NaN or infinite values (shape {tuple(t.shape)})")
        t = t.float()
        if colour:
            t = t[..., 0] * _LUMA[0] + t[..., 1] * _LUMA[1] + t[..., 2] * _LUMA[2]
        return t * scale if scale != 1.0 else t


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(getattr(x, "shape", ()))
