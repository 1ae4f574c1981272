"""Decoded clips for end-to-end training: TSN segment sampling over the frames stage one cached.

A video's N segments are cut over the frames the store holds for it (`frame_index`), with stage
two's `segment_indices`: a uniformly random frame inside each segment in training, the middle one
in evaluation. So the fine-tune sees the frames (and, in evaluation, exactly the pixels) its
head was trained on. The motion stream takes the L flow fields centred on each sampled frame
from the store's cached flow (`stack_flow`; no flow is recomputed).

Every random choice of a sample (segment positions, crop, flip) comes from a generator seeded by
(seed, epoch, video), so a sample is the same whichever worker, loader process or resumed run
draws it: N workers with a global batch of B see exactly what one worker with B sees.

A video that cannot be decoded (or whose flow cannot be read) does not stop training: the sample
comes back as a failure with a one-line reason, the batch goes on without it, and it is counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.backbones import stack_flow
from pipeline.finetune.augment import crop_flow, crop_frames, multiscale_box
from pipeline.finetune.source import Setup, VideoRef
from pipeline.training.batches import segment_indices
from pipeline.video import probe, read_frames_at


@dataclass(frozen=True)
class Request:
    index: int  # into the split's video list
    epoch: int  # seeds the sample's randomness (training)


class ClipDataset(torch.utils.data.Dataset):
    """`dataset[Request]` -> {"index", "label", "inputs": {stream: (N, C, S, S) float32}} or a failure."""

    def __init__(self, setup: Setup, videos: Sequence[VideoRef], *, preprocessors: dict[str, Any], train: bool):
        self.videos = list(videos)
        self.streams = setup.streams
        self.segments = setup.segments
        self.train = train
        self.seed = setup.cfg.seed
        self.cfg = setup.cfg
        self.decode_short = setup.decode_short
        self.folder_fps = setup.folder_fps
        self.store_url, self.storage_options = setup.store_url, setup.storage_options
        self.pre = preprocessors  # {stream: ImagePreprocess | FlowPreprocess}
        self._store = None  # opened lazily, once per process
        self._info: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, request: Request) -> dict[str, Any]:
        video = self.videos[request.index]
        try:
            return self._sample(request, video)
        except Exception as exc:  # noqa: BLE001 - one bad video must never stop training
            text = str(exc).strip().splitlines()
            reason = text[0][:300] if text else type(exc).__name__
            return {"index": request.index, "failed": f"{video.video_id}: {reason}"}

    def _sample(self, request: Request, video: VideoRef) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, request.epoch, request.index]) if self.train else None
        n = len(video.frame_index)
        positions = torch.as_tensor(rng.random((1, self.segments)), dtype=torch.float32) if rng is not None else None
        picks = segment_indices(torch.tensor([n]), self.segments, positions)[0]  # into the cached frames
        box = None
        inputs = {}
        if "rgb" in self.streams:
            frames = self._frames(request.index, video, video.frame_index[picks.numpy()])
            inputs["rgb"], box = self._rgb(frames, rng)
        if "flow" in self.streams:
            inputs["flow"] = self._flow(video, picks, rng, box)
        return {"index": request.index, "label": video.label, "inputs": inputs}

    # -- appearance -----------------------------------------------------------------------------

    def _frames(self, index: int, video: VideoRef, ordinals: np.ndarray) -> torch.Tensor:
        info = self._info.get(index)
        if info is None:
            info = self._info[index] = probe(video.path, folder_fps=self.folder_fps)
        frames = read_frames_at(video.path, ordinals, short_side=self.decode_short, folder_fps=self.folder_fps,
                                info=info, threads=1)
        return torch.from_numpy(frames)

    def _rgb(self, frames: torch.Tensor, rng):
        pre = self.pre["rgb"]
        if rng is None:
            return pre(frames), None  # evaluation: the centre crop, as stage one cached it
        resized = pre.resize(frames)
        box = multiscale_box(*resized.shape[-2:], size=pre.crop_size, scales=self.cfg.scales,
                             max_distort=self.cfg.max_distort, flip=self.cfg.flip, rng=rng)
        return pre.normalize(crop_frames(resized, box, pre.crop_size)), box

    # -- motion ---------------------------------------------------------------------------------

    def _flow(self, video: VideoRef, picks: torch.Tensor, rng, box) -> torch.Tensor:
        pre = self.pre["flow"]
        array = self._store_handle().root["videos"][video.key]["flow"]
        fields = array.shape[0]
        offsets = torch.arange(pre.stack) - pre.stack // 2
        needed = (picks[:, None] + offsets).clamp(0, max(fields - 1, 0))
        lo, hi = int(needed.min()), int(needed.max()) + 1  # read only the span the stacks use
        span = torch.from_numpy(np.asarray(array[lo:hi]))
        stacks = stack_flow(span, picks - lo, stack=pre.stack)  # (N, 2L, h, w), clamped as on the whole video
        if rng is None:
            return pre(stacks)
        resized = pre.resize(stacks)
        if box is None:  # a motion-only fine-tune draws its own crop
            box = multiscale_box(*resized.shape[-2:], size=pre.crop_size, scales=self.cfg.scales,
                                 max_distort=self.cfg.max_distort, flip=self.cfg.flip, rng=rng)
        return pre.normalize(crop_flow(resized, box, pre.crop_size))

    def _store_handle(self):
        if self._store is None:
            from pipeline.store import FeatureStore

            self._store = FeatureStore.open(self.store_url, storage_options=self.storage_options or None)
        return self._store

    def __getstate__(self) -> dict[str, Any]:  # loader processes reopen the store themselves
        return {**self.__dict__, "_store": None}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if "failed" not in s]
    batch: dict[str, Any] = {
        "index": torch.tensor([s["index"] for s in ok], dtype=torch.long),
        "labels": torch.tensor([s["label"] for s in ok], dtype=torch.long),
        "failed": [(s["index"], s["failed"]) for s in samples if "failed" in s],
        "inputs": {},
    }
    if ok:
        batch["inputs"] = {k: torch.stack([s["inputs"][k] for s in ok]) for k in ok[0]["inputs"]}
    return batch


# ---- which worker trains on what ----------------------------------------------------------------


def epoch_steps(num_videos: int, *, batch_size: int, seed: int, epoch: int, min_last: int) -> list[np.ndarray]:
    """One epoch's optimizer steps: a shuffled pass, `batch_size` videos each (the global batch).

    The order depends only on (seed, epoch). A trailing step smaller than `min_last` is dropped
    (every worker needs a sample; BatchNorm needs two), every other video is seen once.
    """
    order = np.random.default_rng([seed, epoch, 1 << 20]).permutation(num_videos)
    steps = [order[i:i + batch_size] for i in range(0, num_videos, batch_size)]
    if len(steps) > 1 and len(steps[-1]) < min_last:
        steps.pop()
    return steps


def shard(step: np.ndarray, *, rank: int, world: int, accum: int) -> list[np.ndarray]:
    """This worker's micro-batches of one global step: every world-th video, cut in `accum` parts."""
    mine = step[rank::world]
    return [part for part in np.array_split(mine, accum)]


class StepBatches(torch.utils.data.Sampler):
    """Micro-batches (lists of `Request`) for a DataLoader's `batch_sampler`, resumable mid-epoch."""

    def __init__(self, steps: list[np.ndarray], *, epoch: int, rank: int, world: int, accum: int, skip: int = 0):
        self.batches = [[Request(int(i), epoch) for i in part]
                        for step in steps[skip:] for part in shard(step, rank=rank, world=world, accum=accum)]

    def __iter__(self) -> Iterator[list[Request]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def eval_batches(num_videos: int, *, batch_size: int, rank: int, world: int) -> list[list[Request]]:
    mine = np.arange(num_videos)[rank::world]
    return [[Request(int(i), 0) for i in mine[s:s + batch_size]] for s in range(0, len(mine), batch_size)]


def make_loader(dataset: ClipDataset, batches, *, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """pin_memory (for CUDA): batches arrive in pinned memory, so their copies to the GPU do not block."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=2 if workers else None,
                                       pin_memory=pin_memory)
