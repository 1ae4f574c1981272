"""The flow stream of one decoder: TV-L1 fields of consecutive frames, chunk after chunk.

Runs where the frames are decoded (a decoder process or thread, each with its own flow method:
methods keep solver buffers and are not thread-safe), so videos get their flow in parallel while
the compute process runs the backbone. Only its functions import torch: decoders without flow never load it.
"""

from __future__ import annotations

import contextlib

import numpy as np


def flow_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of the flow frames `flow_frames` makes from frames of this size."""
    scale = short_side / min(height, width)
    if abs(scale - 1.0) < 1e-6:
        return height, width
    return max(2, round(height * scale)), max(2, round(width * scale))


def flow_frames(frames: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 (n, H, W, 3) -> uint8 (n, h, w, 3) with the shorter side at `short_side` (torch's
    antialiased bilinear, rounded: the frames every stored field was computed from)."""
    import torch

    height, width = frames.shape[1:3]
    size = flow_size(height, width, short_side)
    if size == (height, width):
        return frames
    x = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=list(size),
                                        mode="bilinear", antialias=size[0] < height, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class FlowStream:
    """Quantised TV-L1 fields from the previous chunk's last frame through this chunk, `batch` pairs a call."""

    def __init__(self, method, *, batch: int, bound: float, dtype: str, stream=None):
        self.method, self.batch, self.bound, self.dtype = method, batch, bound, dtype
        self.stream = stream  # a CUDA stream of this decoder thread, or None
        self.last = None

    def reset(self) -> None:
        self.last = None

    def push(self, small: np.ndarray) -> np.ndarray | None:
        """Fields of the chunk's frames `(n, h, w, 3)` uint8: n of them (n - 1 for a video's first chunk)."""
        import torch

        from pipeline.flow import quantize_flow

        frames = torch.from_numpy(small)
        seq = frames if self.last is None else torch.cat([self.last[None], frames])
        self.last = frames[-1].clone()
        if seq.shape[0] < 2:
            return None
        out = []
        device = self.method.device
        context = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with context:
            seq = seq.to(device, non_blocking=True)
            for i in range(0, seq.shape[0] - 1, self.batch):
                nxt = seq[i + 1 : i + self.batch + 1]
                out.append(self.method.pairs(seq[i : i + nxt.shape[0]], nxt))
            # quantised where computed: on a GPU a quarter of the bytes cross to the host (uint8)
            q = quantize_flow(torch.cat(out), bound=self.bound, dtype=self.dtype)
            return q.cpu().numpy() if isinstance(q, torch.Tensor) else np.asarray(q)


def build_stream(name: str, params: dict, *, device: str, max_batch: int, compile: bool | None, batch: int,
                 bound: float, dtype: str, stream=None) -> FlowStream:
    """A flow stream with its own method, built as the compute process built its own."""
    from pipeline.flow import build_flow

    options = {"compile": compile} if compile is not None else {}  # torch TV-L1 only
    method = build_flow(name, device=device, max_batch=max_batch, **options, **params)
    return FlowStream(method, batch=batch, bound=bound, dtype=dtype, stream=stream)
