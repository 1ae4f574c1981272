"""Per-channel mean and standard deviation of a split's features, computed out of core with dask.

Each video's array joins one dask graph through `dask.array.from_zarr`; per-video float64 sums and
sums of squares are added up, so every frame (and every view and map position) weighs the same and
nothing needs to fit in memory. Results are cached under the store's `stats` group (when the
store is writable, e.g. by `stpipe stats`) or in a run directory's `stats.json`, keyed by a
fingerprint of the split's video keys so a changed split is never served stale numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import StoreError
from pipeline.store import FeatureStore
from pipeline.store_io import damaged, is_damage
from pipeline.training.config import STREAM_ARRAYS
from pipeline.training.data import select_videos

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
        return f"{self.split}_{self.stream}" + ("_pooled" if self.pooled else "")


def split_fingerprint(keys: np.ndarray) -> str:
    return hashlib.sha256("\n".join(map(str, keys)).encode()).hexdigest()[:16]


def compute_stats(store: FeatureStore, *, split: str = "train", stream: str = "rgb", pooled: bool = False,
                  scheduler: str = "threads", leave_out: Collection[str] = ()) -> ChannelStats:
    """`leave_out`: keys of videos not to count (damaged ones a run leaves out)."""
    import dask
    import dask.array as da

    keys = _keys(store, split, leave_out)
    name = STREAM_ARRAYS[stream]
    videos = store.root["videos"]
    sums, squares, counts = [], [], []
    for key in keys:
        try:
            array = da.from_zarr(videos[f"{key}/{name}"])
        except KeyError:
            raise StoreError(f"{store.url}: video {key!r} has no {name!r} array for {stream} stats") from None
        x = array.astype(np.float64)
        if x.ndim == 5 and pooled:
            x = x.mean(axis=(-2, -1))
        axes = tuple(i for i in range(x.ndim) if i != 2)  # all but channel: (view, time[, y, x])
        sums.append(x.sum(axis=axes))
        squares.append((x * x).sum(axis=axes))
        counts.append(int(np.prod([x.shape[i] for i in axes])))
    try:
        total, total_sq = dask.compute(da.stack(sums).sum(axis=0), da.stack(squares).sum(axis=0), scheduler=scheduler)
    except (ValueError, RuntimeError) as exc:
        if not is_damage(exc):
            raise
        from pipeline.store_verify import damaged_keys

        found = damaged_keys(store, keys, [name])  # dask does not say whose chunk it was
        if not found:
            raise
        key, (first, *_) = next(iter(found.items()))
        raise damaged(store.url, f"videos/{key}/{name}", f"chunk {first.chunk}: {first.reason}") from exc
    n = float(sum(counts))
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0.0)
    return ChannelStats(stream=stream, split=split, pooled=pooled, fingerprint=split_fingerprint(keys),
                        videos=len(keys), values=int(n), mean=tuple(mean.tolist()), std=tuple(np.sqrt(var).tolist()))


def save_to_store(store: FeatureStore, stats: ChannelStats) -> None:
    if store.read_only:
        raise StoreError(f"{store.url}: opened read-only; cannot cache stats in it")
    group = store.root.require_group(STATS_GROUP)
    group.attrs[stats.name] = asdict(stats)


def _keys(store: FeatureStore, split: str, leave_out: Collection[str]) -> np.ndarray:
    _, keys, _, _ = select_videos(store, split)
    return keys[~np.isin(keys, list(leave_out))] if len(leave_out) else keys


def cached_stats(store: FeatureStore, *, split: str, stream: str, pooled: bool,
                 run_dir: str | Path | None = None, leave_out: Collection[str] = ()) -> ChannelStats | None:
    """Stats from the store's cache or the run dir's stats.json when their fingerprint still matches."""
    keys = _keys(store, split, leave_out)
    fingerprint = split_fingerprint(keys)
    name = ChannelStats(stream, split, pooled, "", 0, 0, (), ()).name
    candidates = []
    if STATS_GROUP in store.root:
        candidates.append(store.root[STATS_GROUP].attrs.get(name))
    if run_dir is not None and (Path(run_dir) / "stats.json").is_file():
        candidates.append(json.loads((Path(run_dir) / "stats.json").read_text()).get(name))
    for found in candidates:
        if found and found.get("fingerprint") == fingerprint:
            return ChannelStats(**{**found, "mean": tuple(found["mean"]), "std": tuple(found["std"])})
    return None


def stats_for_training(store: FeatureStore, *, split: str, stream: str, pooled: bool,
                       run_dir: str | Path, leave_out: Collection[str] = ()) -> ChannelStats:
    """Cached stats, else computed now and cached in the run dir (and the store when writable)."""
    found = cached_stats(store, split=split, stream=stream, pooled=pooled, run_dir=run_dir, leave_out=leave_out)
    if found is not None:
        return found
    stats = compute_stats(store, split=split, stream=stream, pooled=pooled, leave_out=leave_out)
    if not store.read_only:
        save_to_store(store, stats)
    path = Path(run_dir) / "stats.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved[stats.name] = asdict(stats)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved))
    return stats
