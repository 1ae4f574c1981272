"""`stpipe stats STORE`: per-channel mean/std of a split's features (read as stage two reads them),
cached in the store for stage two. It writes into the store, so it holds the store's lease (no
extract or import writes meanwhile)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config import STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError
from pipeline.progress import Progress


@dataclass(frozen=True)
class StatsConfig:
    store: str = arg("", positional=True, required=True)
    split: str = arg("train", "Split the statistics describe.")
    modality: Literal["rgb", "flow", "rgb+flow"] = arg("rgb", "Feature streams.")
    pooled: bool = arg(False, "Spatial stores: stats of (y, x)-averaged maps, as pooled heads see them.",
                       negatable=False)
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)

    def __post_init__(self) -> None:
        if not self.store:
            raise ConfigError("stats needs a STORE")


def run(cfg: StatsConfig, progress: Progress | None = None) -> list[str]:
    """Compute and cache the stats of each stream; one summary line per stream. `progress`: the loads."""
    from pipeline.errors import full_disk_as_error
    from pipeline.store import FeatureStore
    from pipeline.store.lease import StoreLease

    with full_disk_as_error(cfg.store), StoreLease(cfg.store, storage_options=cfg.storage_options or None):
        return _compute(cfg, FeatureStore.open(cfg.store, mode="r+", storage_options=cfg.storage_options or None),
                        progress)


def _compute(cfg: StatsConfig, opened, progress: Progress | None) -> list[str]:
    import torch

    from pipeline.training.config import MODALITY_STREAMS, STREAM_ARRAYS
    from pipeline.training.data import load_split, memory_budget_bytes, select_videos
    from pipeline.training.stats import compute_stats, save_to_store

    budget = memory_budget_bytes(0, torch.device("cpu"))
    _, keys, _, _ = select_videos(opened, cfg.split)
    lines = []
    for stream in MODALITY_STREAMS[cfg.modality]:
        array = opened.root[f"videos/{keys[0]}/{STREAM_ARRAYS[stream]}"]
        pooled = cfg.pooled or array.ndim == 3  # a store of vectors: their stats are what every head sees
        part = load_split(opened, cfg.split, streams=(stream,), pooled=pooled, memory_budget_bytes=budget,
                          progress=progress)
        stats = compute_stats(opened, part, stream, pooled=pooled)
        save_to_store(opened, stats)
        mean, std = stats.mean, stats.std
        lines.append(f"{cfg.store} {stream} ({cfg.split}, {stats.videos} videos, {stats.values:,} values per channel, "
                     f"{len(mean)} channels): mean in [{min(mean):.4g}, {max(mean):.4g}], std in "
                     f"[{min(std):.4g}, {max(std):.4g}]; cached as stats/{stats.name}")
    return lines
