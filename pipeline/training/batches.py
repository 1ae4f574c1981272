"""Segment sampling and batch gathering with tensor ops: no DataLoader, no per-sample Python.

Sampling follows TSN as used by seed 000: a video of L frames is cut into N segments with integer
bounds start_t = floor(t L / N), end_t = max(floor((t+1) L / N), start_t + 1); training takes a
uniformly random frame inside each segment, evaluation the middle one (start_t + len_t // 2).
Videos shorter than N frames get one-frame segments that repeat frames, in order. TSN's own code
drops the L mod N tail frames from sampling; these bounds cover every frame.

A batch's random choices (videos, in-segment positions, views) are drawn in the main thread from
one seeded generator into a `BatchPlan`, so a run is reproducible however its features are fetched
(in memory or streamed), and several streams (rgb, flow) see the same relative positions and view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.training.data import SplitData


def segment_indices(lengths: torch.Tensor, num_segments: int, positions: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, N) frame indices. positions (B, N) in [0, 1) picks inside each segment;
    None picks each segment's middle frame (evaluation)."""
    t = torch.arange(num_segments, device=lengths.device)
    length = lengths.long()[:, None]
    start = t * length // num_segments
    size = ((t + 1) * length // num_segments - start).clamp(min=1)
    if positions is None:
        offset = size // 2
    else:
        offset = torch.minimum((positions * size).long(), size - 1)
    return start + offset


@dataclass
class BatchPlan:
    videos: torch.Tensor  # (B,) indices into the split
    positions: torch.Tensor | None  # (B, N) in [0, 1): random frame inside each segment; None = middle
    view_draw: torch.Tensor | None  # (B,) in [0, 1): random view (floor(draw * views)); None = given view


def train_plans(num_videos: int, batch_size: int, num_segments: int, generator: torch.Generator) -> list[BatchPlan]:
    """One epoch: a shuffled pass over the split. A trailing batch of one sample is dropped
    (BatchNorm cannot train on it); every other sample is seen once."""
    order = torch.randperm(num_videos, generator=generator)
    plans = []
    for start in range(0, num_videos, batch_size):
        videos = order[start:start + batch_size]
        if len(videos) < 2 and num_videos > 1:
            break
        plans.append(BatchPlan(videos=videos, positions=torch.rand(len(videos), num_segments, generator=generator),
                               view_draw=torch.rand(len(videos), generator=generator)))
    return plans


def eval_plans(num_videos: int, batch_size: int) -> list[BatchPlan]:
    order = torch.arange(num_videos)
    return [BatchPlan(videos=order[s:s + batch_size], positions=None, view_draw=None)
            for s in range(0, num_videos, batch_size)]


class Standardizer:
    """x -> (x - mean) / std per channel (the channel axis is 2 in (B, T, C[, H, W]))."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, device: torch.device, spatial: bool):
        shape = (-1, 1, 1) if spatial else (-1,)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(shape)
        self.inv_std = (1.0 / torch.as_tensor(std, dtype=torch.float32, device=device).clamp(min=1e-6)).reshape(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.sub_(self.mean).mul_(self.inv_std)


class MemoryFeatures:
    """A split's features as one device tensor per stream; `gather` builds a batch in a few ops.

    The returned tensors live in buffers reused by the next `gather` (no allocation per batch);
    use a batch before gathering the next one.
    """

    def __init__(self, split: SplitData, *, device: torch.device, num_segments: int,
                 standardizers: dict[str, Standardizer] | None = None, max_batch: int = 256):
        self.device = device
        self.num_segments = num_segments
        self.labels = torch.as_tensor(split.labels, device=device)
        self.standardizers = standardizers or {}
        self.streams = {}
        for name, data in split.streams.items():
            frames = _as_tensor(data.frames).to(device)
            self.streams[name] = _Stream(
                frames=frames.reshape(-1, *data.frame_shape),  # (views * total, *frame) rows
                total=frames.shape[1], views=data.views, frame_shape=data.frame_shape,
                offsets=torch.as_tensor(data.offsets, device=device),
                lengths=torch.as_tensor(data.lengths, device=device),
            )
        self._buffers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._reserve(max_batch)

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, plan: BatchPlan, view: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features {stream: (B, N, *frame)} float32 and labels (B,) for one plan (view used when
        the plan draws none)."""
        videos = plan.videos.to(self.device, non_blocking=True)
        positions = None if plan.positions is None else plan.positions.to(self.device, non_blocking=True)
        draw = None if plan.view_draw is None else plan.view_draw.to(self.device, non_blocking=True)
        rows_needed = len(videos) * self.num_segments
        if rows_needed > next(iter(self._buffers.values()))[0].shape[0]:
            self._reserve(len(videos))
        out = {}
        for name, s in self.streams.items():
            idx = segment_indices(s.lengths[videos], self.num_segments, positions)
            views = (draw * s.views).long().clamp(max=s.views - 1) if draw is not None else view % s.views
            rows = ((views * s.total + s.offsets[videos])[:, None] + idx).reshape(-1)
            half, full = self._buffers[name]
            half, full = half[:rows_needed], full[:rows_needed]
            torch.index_select(s.frames, 0, rows, out=half)
            full.copy_(half)
            x = full.view(len(videos), self.num_segments, *s.frame_shape)
            if name in self.standardizers:
                x = self.standardizers[name](x)
            out[name] = x
        return out, self.labels[videos]

    def _reserve(self, batch: int) -> None:
        rows = batch * self.num_segments
        for name, s in self.streams.items():
            self._buffers[name] = (torch.empty(rows, *s.frame_shape, dtype=s.frames.dtype, device=self.device),
                                   torch.empty(rows, *s.frame_shape, dtype=torch.float32, device=self.device))


@dataclass
class _Stream:
    frames: torch.Tensor
    total: int
    views: int
    frame_shape: tuple[int, ...]
    offsets: torch.Tensor
    lengths: torch.Tensor


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy view of a (possibly read-only, e.g. Ray object store) array; never written to."""
    if not array.flags.writeable:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    return torch.from_numpy(array)
