"""Features of one split, read once from the store into plain arrays (the fast path's input).

`load_split` returns a `SplitData` of numpy arrays: each stream's frames of every video back to back
in one contiguous (views, total_frames, C[, H, W]) float16 array plus per-video offsets and lengths.
Plain arrays go into Ray's object store as they are (zero-copy), so an ablation reads the store
once and hands the same `SplitData` to every trial. Splits whose features exceed the memory budget
keep only their video list and are read from Zarr batch by batch (`pipeline.training.streaming`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import StoreError
from pipeline.progress import Advanced, Finished, Progress, Started, emitter
from pipeline.store import FeatureStore
from pipeline.store.io import damage_reason, damaged, is_damage
from pipeline.store.pack import open_pack
from pipeline.training.config import STREAM_ARRAYS

log = logging.getLogger(__name__)
READ_THREADS = 4  # zarr reads are mostly per-call overhead; a few threads overlap it


@dataclass
class StreamData:
    """One stream (rgb or flow) of one split."""

    array: str  # array name in each video group (rgb, flow_feat)
    frame_shape: tuple[int, ...]  # (C,) pooled or (C, H, W) spatial, as the head sees it
    views: int
    offsets: np.ndarray  # (videos,) int64: first frame of each video in `frames`
    lengths: np.ndarray  # (videos,) int64
    frames: np.ndarray | None  # (views, total_frames, *frame_shape) float16; None when streamed
    pool: bool = False  # the store holds maps but the head wants vectors: average over (y, x)

    @property
    def nbytes(self) -> int:
        return int(self.views * self.lengths.sum() * np.prod(self.frame_shape) * 2)


@dataclass
class SplitData:
    """A split's labels and streams; `store_url` lets a streamed split reopen the store anywhere."""

    split: str
    video_ids: np.ndarray
    keys: np.ndarray
    labels: np.ndarray  # (videos,) int64 class indices
    streams: dict[str, StreamData]
    store_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings for the user (skipped videos, ...)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        return any(s.frames is None for s in self.streams.values())

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.streams.values())


def memory_budget_bytes(budget_gb: float, device) -> float:
    """`budget_gb` in bytes; 0 means half of what is free where the features will live."""
    if budget_gb > 0:
        return budget_gb * 2**30
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return min(free, _available_ram()) / 2  # a split passes through host memory on its way
    return _available_ram() / 2


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8.0 * 2**30


def select_videos(store: FeatureStore, split: str, *, labelled: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(video_ids, keys, labels, notes) of the split's complete (and labelled) videos; errors when none."""
    index = store.index()
    in_split = index["split"] == split
    complete = index["status"] == "complete"
    has_label = (index["label"] >= 0) if labelled else np.ones(len(index["label"]), dtype=bool)
    notes = []
    failed = int((index["status"] == "failed").sum())
    incomplete = int((in_split & ~complete).sum())
    unlabelled = int((in_split & complete & ~has_label).sum())
    if failed:
        notes.append(f"{store.url}: skipping {failed} failed video(s) recorded in the store's failures")
    if incomplete:
        notes.append(f"{store.url}: skipping {incomplete} incomplete video(s) in split {split!r}")
    keep = in_split & complete & has_label
    if not keep.any():
        if (in_split & complete).any():
            raise StoreError(f"{store.url}: split {split!r} has no labelled videos ({unlabelled} without labels)")
        known = sorted({str(s) for s in index["split"][complete]})
        raise StoreError(f"{store.url}: split {split!r} has no complete videos (splits present: {', '.join(known) or 'none'})")
    if unlabelled:
        notes.append(f"{store.url}: skipping {unlabelled} unlabelled video(s) in split {split!r}")
    return _strings(index["video_id"][keep]), _strings(index["key"][keep]), index["label"][keep].astype(np.int64), notes


def _strings(values: np.ndarray) -> np.ndarray:
    """Fixed-width str array (the index may hold numpy's variable-width StringDType)."""
    return np.array([str(v) for v in values.tolist()], dtype=str)


def load_split(
    store: FeatureStore,
    split: str,
    *,
    streams: Sequence[str] = ("rgb",),
    pooled: bool = True,
    memory_budget_bytes: float | None = None,
    storage_options: dict[str, Any] | None = None,
    labelled: bool = True,
    progress: Progress | None = None,
    skip_damaged: bool = False,
) -> SplitData:
    """Read a split's features into contiguous arrays (or, above the budget, only their layout).

    pooled: the head wants (B, T, D) vectors; spatial maps in the store are averaged over (y, x)
    once, at load time, instead of in every batch. labelled=False keeps videos without a label (-1).
    skip_damaged: check every chunk of the split's feature arrays first and leave out the videos with
    a damaged one, with a note (else a damaged chunk stops the read in one line naming it).
    progress: the "loading <split>" task (videos), reported from this thread as arrays are opened and read.
    """
    video_ids, keys, labels, notes = select_videos(store, split, labelled=labelled)
    if skip_damaged:
        video_ids, keys, labels = _without_damaged(store, split, video_ids, keys, labels, notes)
    try:
        packed = _from_pack(store, split, keys, streams, pooled, memory_budget_bytes)
    except (ValueError, RuntimeError) as exc:
        if not is_damage(exc):
            raise
        packed = None  # a damaged pack chunk: the videos' own arrays hold the same
        notes.append(f"{store.url}: the pack is damaged ({damage_reason(str(exc))}); reading the videos' own arrays "
                     "(`stpipe verify --repair` rebuilds it)")
    report = _Loading(progress, split, len(keys), 2 * len(streams) * len(keys))  # open every array, then read it
    if packed is not None:
        report.finish()
        return SplitData(split=split, video_ids=video_ids, keys=keys, labels=labels, streams=packed,
                         store_url=store.url, storage_options=dict(storage_options or {}), notes=notes)
    videos = store.root["videos"]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        layout, arrays = {}, {}
        for s in streams:
            layout[s], arrays[s] = _layout(store, videos, keys, s, pooled, pool, report)
        total = sum(d.nbytes for d in layout.values())
        stream_it = memory_budget_bytes is not None and total > memory_budget_bytes
        if stream_it:
            notes.append(f"split {split!r}: {total / 2**30:.2f} GiB of features exceeds the memory budget "
                         f"({memory_budget_bytes / 2**30:.2f} GiB); streaming from Zarr with prefetch")
            arrays.clear()
        else:
            for s, data in layout.items():
                _read_frames(arrays.pop(s), data, pool, report)
    report.finish()
    log.info("split %s: %d videos, %.1f MiB %s", split, len(keys), total / 2**20,
             "streamed" if stream_it else "in memory")
    return SplitData(split=split, video_ids=video_ids, keys=keys, labels=labels, streams=layout,
                     store_url=store.url, storage_options=dict(storage_options or {}), notes=notes)


def _without_damaged(store: FeatureStore, split: str, video_ids: np.ndarray, keys: np.ndarray, labels: np.ndarray,
                     notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The videos whose feature arrays (every stream's, so all streams keep the same videos) are whole."""
    from pipeline.store.verify import damaged_keys

    bad = damaged_keys(store, keys, STREAM_ARRAYS.values())
    if not bad:
        return video_ids, keys, labels
    keep = np.array([str(k) not in bad for k in keys], dtype=bool)
    if not keep.any():
        raise StoreError(f"{store.url}: every video of split {split!r} has damaged data "
                         f"(`stpipe verify {store.url}` lists them)")
    shown = ", ".join(f"{video_ids[i]} ({bad[str(keys[i])][0].array})" for i in np.flatnonzero(~keep)[:5])
    notes.append(f"{store.url}: leaving out {int((~keep).sum())} video(s) of split {split!r} with damaged data: "
                 f"{shown}{' ...' if (~keep).sum() > 5 else ''} (`stpipe verify --repair` marks them for redo)")
    return video_ids[keep], keys[keep], labels[keep]


def _from_pack(store: FeatureStore, split: str, keys: np.ndarray, streams: Sequence[str], pooled: bool,
               memory_budget_bytes: float | None) -> dict[str, StreamData] | None:
    """Each stream's frames read from the store's pack in a few large requests (`pipeline.store.pack`);
    None when a pack is missing or does not hold every video, the head wants maps, or the split is
    over the memory budget (streamed from the per-video groups)."""
    if not pooled:
        return None
    found = {}
    for s in streams:
        pack = open_pack(store, STREAM_ARRAYS[s])
        rows = pack.rows_of(keys) if pack is not None else None
        if rows is None:
            return None
        found[s] = (pack, rows)
    total = sum(int(p.lengths[r].sum()) * p.frames.shape[0] * p.frames.shape[2] * 2 for p, r in found.values())
    if memory_budget_bytes is not None and total > memory_budget_bytes:
        return None
    out = {}
    for s, (pack, rows) in found.items():
        lengths = pack.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        frames = pack.read(rows)
        log.info("split %s: %s read from the pack (%d videos)", split, s, len(rows))
        out[s] = StreamData(array=STREAM_ARRAYS[s], frame_shape=(int(frames.shape[2]),), views=int(frames.shape[0]),
                            offsets=offsets, lengths=lengths, frames=frames, pool=pack.from_maps)
    return out


class _Loading:
    """The "loading <split>" task (videos) from the loading thread; opening and reading each count half."""

    def __init__(self, progress: Progress | None, split: str, videos: int, steps: int):
        self.emit, self.task = emitter(progress), f"loading {split}"
        self.videos, self.steps, self.done = videos, max(steps, 1), 0
        self.emit(Started(self.task, total=videos, unit="video", transient=True))

    def step(self) -> None:
        self.done += 1
        if self.done % 256 == 0 or self.done == self.steps:
            self.emit(Advanced(self.task, n=0, done=self.done * self.videos // self.steps))

    def finish(self) -> None:
        self.emit(Finished(self.task))


def _layout(store: FeatureStore, videos, keys: np.ndarray, stream: str, pooled: bool, pool,
            report: _Loading) -> tuple[StreamData, list]:
    """The stream's per-video shapes checked and laid out back to back; also the opened arrays
    (about 2.6 kB each), so reading them does not open every array a second time."""
    name = STREAM_ARRAYS[stream]

    def open_array(key: str):
        try:
            return videos[f"{key}/{name}"]
        except KeyError:
            hint = " (extract with --flow-features to cache flow-stream features)" if stream == "flow" else ""
            raise StoreError(f"{store.url}: video {key!r} has no {name!r} array, needed for the {stream} "
                             f"stream{hint}") from None

    arrays = []
    for array in pool.map(open_array, keys):
        arrays.append(array)
        report.step()
    shapes = [tuple(a.shape) for a in arrays]
    first = shapes[0]
    if len(first) not in (3, 5):
        raise StoreError(f"{store.url}: {name!r} of video {keys[0]!r} has shape {first}; expected "
                         "(view, time, channel) or (view, time, channel, y, x)")
    for key, shape in zip(keys, shapes):
        if len(shape) != len(first) or shape[0] != first[0] or shape[2:] != first[2:]:
            raise StoreError(f"{store.url}: {name!r} of video {key!r} has shape {shape}, unlike {first} "
                             f"of {keys[0]!r} (views and per-frame shape must match across videos)")
    lengths = np.array([s[1] for s in shapes], dtype=np.int64)
    if (lengths < 1).any():
        bad = keys[int(np.argmax(lengths < 1))]
        raise StoreError(f"{store.url}: video {bad!r} has no frames in {name!r}")
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    spatial_in_store = len(first) == 5
    frame_shape = first[2:3] if pooled else first[2:]
    if not pooled and not spatial_in_store:
        raise StoreError(f"{store.url}: the head needs spatial feature maps but {name!r} holds pooled vectors "
                         f"{first}; extract with --features spatial or choose a pooled head")
    data = StreamData(array=name, frame_shape=tuple(frame_shape), views=int(first[0]), offsets=offsets,
                      lengths=lengths, frames=None, pool=pooled and spatial_in_store)
    return data, arrays


def _read_frames(arrays: list, data: StreamData, pool, report: _Loading) -> None:
    frames = np.empty((data.views, int(data.lengths.sum()), *data.frame_shape), dtype=np.float16)

    def read_one(i: int) -> None:
        frames[:, data.offsets[i]: data.offsets[i] + data.lengths[i]] = read_array(arrays[i], data)

    for _ in pool.map(read_one, range(len(arrays))):
        report.step()
    data.frames = frames


def read_video(videos, key: str, data: StreamData, view: int | slice = slice(None),
               time: slice = slice(None)) -> np.ndarray:
    """One video's ([views,] time, *frame_shape) float16 features, pooled over (y, x) when asked."""
    return read_array(videos[f"{key}/{data.array}"], data, view, time)


def read_array(array, data: StreamData, view: int | slice = slice(None), time: slice = slice(None)) -> np.ndarray:
    try:
        values = array[view, time]
    except (ValueError, RuntimeError) as exc:
        if not is_damage(exc):
            raise
        raise damaged("", array.path, str(exc)) from None
    if data.pool:
        values = values.astype(np.float32).mean(axis=(-2, -1))
    return np.asarray(values, dtype=np.float16)
