"""Segment sampling and batch gathering with tensor ops: no DataLoader, no per-sample Python.

Sampling follows TSN as used by Köpüklü et al.: a video of L frames is cut into N segments with integer
bounds start_t = floor(t L / N), end_t = max(floor((t+1) L / N), start_t + 1); training takes a
uniformly random frame inside each segment, evaluation the middle one (start_t + len_t // 2).
Videos shorter than N frames get one-frame segments that repeat frames, in order. TSN's own code
drops the L mod N tail frames from sampling; these bounds cover every frame.

A batch's random choices (videos, in-segment positions, views) are drawn in the main thread from
one seeded generator into a `BatchPlan`, so a run is reproducible however its features are fetched
(in memory or streamed), and several streams (rgb, flow) see the same relative positions and view.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
    """A split's features as one device tensor per stream; a batch is one `index_select` per stream.

    Batches come as float32: the float16 rows are gathered into a reused buffer and converted into
    another (standardised there in place when asked). The returned tensors live in that buffer and
    are overwritten by the next batch (no allocation per batch); use a batch before drawing the next.
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
        self._capacity = 0
        self._reserve(max_batch)

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, plan: BatchPlan, view: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features {stream: (B, N, *frame)} float32 and labels (B,) for one plan (view used when
        the plan draws none)."""
        return next(self.iterate([plan], (view,)))

    def iterate(self, plans: Sequence[BatchPlan], views: Sequence[int] = (0,)
                ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """`gather(plan, view)` for each plan and each view (views vary fastest). The frame rows of
        all of them are computed up front in a few tensor ops over the whole list, so each batch
        costs one `index_select` per stream into its reused buffer."""
        work = [(plan, view) for plan in plans for view in views]
        if not work:
            return
        sizes = [len(plan.videos) for plan, _ in work]
        if max(sizes) > self._capacity:
            self._reserve(max(sizes))
        videos, positions, draw, use_draw, fixed = self._draws(work, sizes)
        rows = {name: torch.split(self._rows(s, videos, positions, draw, use_draw, fixed),
                                  [n * self.num_segments for n in sizes])
                for name, s in self.streams.items()}
        labels = torch.split(self.labels[videos], sizes)
        for i, size in enumerate(sizes):
            out = {}
            for name, s in self.streams.items():
                count = len(rows[name][i])
                half, full = self._buffers[name][0][:count], self._buffers[name][1][:count]
                torch.index_select(s.frames, 0, rows[name][i], out=half)
                full.copy_(half)
                if name in self.standardizers:
                    self.standardizers[name](full)
                out[name] = full.view(size, self.num_segments, *s.frame_shape)
            yield out, labels[i]

    def _draws(self, work: list[tuple[BatchPlan, int]], sizes: list[int]):
        """The plans' random choices concatenated, on the device. A plan without positions takes
        each segment's middle frame, which is position 0.5 (floor(0.5 * size) = size // 2); one
        without view draws takes its given view."""
        n = self.num_segments
        counts = torch.tensor(sizes)
        videos = torch.cat([plan.videos for plan, _ in work])
        positions = torch.cat([plan.positions if plan.positions is not None else torch.full((len(plan.videos), n), 0.5)
                               for plan, _ in work])
        draw = torch.cat([plan.view_draw if plan.view_draw is not None else torch.zeros(len(plan.videos))
                          for plan, _ in work])
        use_draw = torch.tensor([plan.view_draw is not None for plan, _ in work]).repeat_interleave(counts)
        fixed = torch.tensor([view for _, view in work]).repeat_interleave(counts)
        return tuple(t.to(self.device, non_blocking=True) for t in (videos, positions, draw, use_draw, fixed))

    def _rows(self, s: _Stream, videos, positions, draw, use_draw, fixed) -> torch.Tensor:
        """(samples * N,) row numbers in the stream's (views * total, *frame) rows."""
        idx = segment_indices(s.lengths[videos], self.num_segments, positions)
        views = torch.where(use_draw, (draw * s.views).long().clamp(max=s.views - 1), fixed % s.views)
        return ((views * s.total + s.offsets[videos])[:, None] + idx).reshape(-1)

    def _reserve(self, batch: int) -> None:
        rows = batch * self.num_segments
        for name, s in self.streams.items():
            # spatial maps go channels-last: the float32 copy transposes on the way (~4x the plain
            # copy's time) and the heads' 1x1 projection then runs ~2.5x faster on CPU
            layout = torch.channels_last if len(s.frame_shape) == 3 else torch.contiguous_format
            self._buffers[name] = (torch.empty(rows, *s.frame_shape, dtype=s.frames.dtype, device=self.device),
                                   torch.empty(rows, *s.frame_shape, dtype=torch.float32, device=self.device,
                                               memory_format=layout))
        self._capacity = batch


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
