"""Per-channel mean and standard deviation of a split's features, from the arrays stage two loads.

There is one read path: the statistics are computed from what `pipeline.training.data.load_split`
returned (the pack when it covers the split, else the per-video groups, within the memory budget),
in the same pass; a split streamed for being over the budget is summed video by video through the
same reader. Every frame (and every view and map position) weighs the same; sums are float64.

Where they are kept, so that later runs, ablations and evaluations read them in milliseconds:
- the pack (`pipeline.store.pack`) stores each split's statistics of the vectors it holds when it is
  built, so a rebuild drops them with it;
- otherwise the store's `stats` group (when it is writable) and the run directory's `stats.json`.
Each entry carries a fingerprint of its split's video keys: a changed split is never served stale
numbers.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import StoreError
from pipeline.moments import Moments, split_fingerprint
from pipeline.store import FeatureStore
from pipeline.store.pack import open_pack
from pipeline.training.data import READ_THREADS, SplitData, read_array

STATS_GROUP = "stats"


@dataclass(frozen=True)
class ChannelStats:
    stream: str
    split: str
    pooled: bool  # stats of (y, x)-averaged maps (what a pooled head sees) rather than of map positions
    fingerprint: str
    videos: int
    values: int  # numbers averaged per channel
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def name(self) -> str:
        return stats_name(self.split, self.stream, self.pooled)


def stats_name(split: str, stream: str, pooled: bool) -> str:
    return f"{split}_{stream}" + ("_pooled" if pooled else "")


def stats_of(moments: Moments, *, stream: str, split: str, pooled: bool, keys, videos: int) -> ChannelStats:
    mean, std = moments.mean_std()
    return ChannelStats(stream=stream, split=split, pooled=pooled, fingerprint=split_fingerprint(keys), videos=videos,
                        values=int(moments.count), mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def compute_stats(store: FeatureStore, part: SplitData, stream: str, *, pooled: bool) -> ChannelStats:
    """The statistics of a loaded one-split part: from its frames in memory, or (streamed) video by
    video through the same reader, READ_THREADS at a time."""
    data = part.streams[stream]
    moments = Moments()
    if data.frames is not None:
        moments.add(data.frames)
    else:
        videos = store.root["videos"]

        def read(key: str) -> np.ndarray:
            try:
                return read_array(videos[f"{key}/{data.array}"], data)
            except KeyError:
                raise StoreError(f"{store.url}: video {key!r} has no {data.array!r} array for {stream} stats") from None

        with ThreadPoolExecutor(READ_THREADS) as pool:
            for values in pool.map(read, part.keys):
                moments.add(values)
    return stats_of(moments, stream=stream, split=part.split, pooled=pooled, keys=part.keys, videos=len(part))


def cached_stats(store: FeatureStore, part: SplitData, stream: str, *, pooled: bool,
                 run_dir: str | Path | None = None) -> ChannelStats | None:
    """Stats kept by the pack, the store or the run dir whose fingerprint matches the part's videos."""
    fingerprint = split_fingerprint(part.keys)
    name = stats_name(part.split, stream, pooled)
    candidates = []
    if pooled:
        pack = open_pack(store, part.streams[stream].array)
        if pack is not None:
            candidates.append(pack.stats.get(part.split))
    if STATS_GROUP in store.root:
        candidates.append(store.root[STATS_GROUP].attrs.get(name))
    if run_dir and (Path(run_dir) / "stats.json").is_file():
        candidates.append(json.loads((Path(run_dir) / "stats.json").read_text()).get(name))
    for found in candidates:
        if found and found.get("fingerprint") == fingerprint:
            found = {**found, "stream": stream, "split": part.split, "pooled": pooled}
            return ChannelStats(**{**found, "mean": tuple(found["mean"]), "std": tuple(found["std"])})
    return None


def save_to_store(store: FeatureStore, stats: ChannelStats) -> None:
    if store.read_only:
        raise StoreError(f"{store.url}: opened read-only; cannot cache stats in it")
    group = store.root.require_group(STATS_GROUP)
    group.attrs[stats.name] = asdict(stats)


def stats_for_training(store: FeatureStore, part: SplitData, stream: str, *, pooled: bool,
                       run_dir: str | Path) -> ChannelStats:
    """Kept stats, else computed from the loaded part now and kept in the run dir (and the store
    when writable)."""
    found = cached_stats(store, part, stream, pooled=pooled, run_dir=run_dir)
    if found is not None:
        return found
    stats = compute_stats(store, part, stream, pooled=pooled)
    if not store.read_only:
        save_to_store(store, stats)
    path = Path(run_dir) / "stats.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved[stats.name] = asdict(stats)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved))
    return stats
