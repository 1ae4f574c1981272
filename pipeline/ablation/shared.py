"""The store's features read once for a whole ablation and shared by every trial without copies.

Each (split, stream, pooled-or-maps) the grid needs is read once into plain numpy arrays
(`pipeline.training.data.load_split`); a trial composes its `TrainData` from those same arrays. On
Ray the whole `SharedFeatures` goes into the object store once: numpy buffers are stored out of band
and mapped read-only by every trial on a node, so four trials on one node hold one copy, not four.
Parts above the memory budget keep only their layout and are streamed from Zarr by each trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.ablation.grid import Grid, Trial
from pipeline.heads import HEADS
from pipeline.store import FeatureStore
from pipeline.training.config import MODALITY_STREAMS
from pipeline.training.data import SplitData, load_split
from pipeline.training.loop import TrainData
from pipeline.training.runs import store_signature
from pipeline.training.stats import stats_for_training


def is_pooled(head: str) -> bool:
    return HEADS.meta(head)["input_kind"] == "pooled"


@dataclass
class SharedFeatures:
    classes: list[str]
    parts: dict[tuple[str, str, bool], SplitData]  # (split, stream, pooled) -> one-stream SplitData
    signatures: dict[tuple[str, bool], dict[str, Any]]  # (modality, pooled) -> store signature
    stats: dict[tuple[str, bool], tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)
    val_split: str = "val"

    def train_data(self, trial: Trial) -> TrainData:
        pooled = is_pooled(trial.head)
        streams = MODALITY_STREAMS[trial.modality]
        splits = [_own_index(_join([self.parts[(split, s, pooled)] for s in streams]))
                  for split in ("train", self.val_split)]
        stats = {s: self.stats[(s, pooled)] for s in streams if (s, pooled) in self.stats}
        return TrainData(train=splits[0], val=splits[1], classes=list(self.classes), stats=stats)

    def signature(self, trial: Trial) -> dict[str, Any]:
        return self.signatures[(trial.modality, is_pooled(trial.head))]

    @property
    def nbytes(self) -> int:
        """Bytes of features held in memory (streamed parts count zero)."""
        return sum(sum(s.frames.nbytes for s in part.streams.values() if s.frames is not None)
                   for part in self.parts.values())


def load_shared(store: FeatureStore, grid: Grid, *, val_split: str = "val", standardize: bool = False,
                memory_budget_bytes: float, stats_dir: str, storage_options: dict[str, Any] | None = None,
                note: Callable[[str], None] | None = None) -> SharedFeatures:
    """Read what the grid's trials need, once. Maps (for spatial heads) load before pooled vectors."""
    note = note or (lambda message: None)
    needed = {(s, is_pooled(t.head)) for t in grid.trials for s in MODALITY_STREAMS[t.modality]}
    parts: dict[tuple[str, str, bool], SplitData] = {}
    budget = memory_budget_bytes
    for stream, pooled in sorted(needed, key=lambda k: (k[1], k[0])):
        for split in ("train", val_split):
            part = load_split(store, split, streams=(stream,), pooled=pooled, memory_budget_bytes=max(budget, 1.0),
                              storage_options=storage_options)
            if not part.streamed:
                budget -= part.nbytes
            kind = "vectors" if pooled else "maps"
            where = "streamed from Zarr (over the memory budget)" if part.streamed else "in memory"
            note(f"{split} {stream} {kind}: {len(part)} videos, {part.nbytes / 2**20:.1f} MiB {where}")
            parts[(split, stream, pooled)] = part
    signatures = {(t.modality, is_pooled(t.head)): None for t in grid.trials}
    for modality, pooled in signatures:
        signatures[(modality, pooled)] = store_signature(store, MODALITY_STREAMS[modality], pooled=pooled)
    stats = {}
    if standardize:
        for stream, pooled in needed:
            found = stats_for_training(store, split="train", stream=stream, pooled=pooled, run_dir=stats_dir)
            stats[(stream, pooled)] = (tuple(found.mean), tuple(found.std))  # plain floats: no read-only arrays
    return SharedFeatures(classes=store.classes, parts=parts, signatures=signatures, stats=stats, val_split=val_split)


def _own_index(part: SplitData) -> SplitData:
    """Writable copies of the small per-video arrays (labels, offsets, lengths; a few KB), so torch
    never wraps read-only object-store memory it might write to; the frames stay shared."""
    streams = {name: replace(data, offsets=data.offsets.copy(), lengths=data.lengths.copy())
               for name, data in part.streams.items()}
    return replace(part, labels=part.labels.copy(), streams=streams)


def _join(parts: list[SplitData]) -> SplitData:
    """One SplitData with the streams of several one-stream parts of the same split (same videos)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    for other in parts[1:]:
        if not np.array_equal(other.keys, first.keys):
            raise ValueError(f"split {first.split!r}: streams cover different videos")
    streams = {name: data for part in parts for name, data in part.streams.items()}
    notes = list(dict.fromkeys(n for part in parts for n in part.notes))
    return replace(first, streams=streams, notes=notes)
