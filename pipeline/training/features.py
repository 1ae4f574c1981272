"""Stage two's one feature loader: what train-head, ablate and evaluate read from a store, read once.

`load_features` reads each (split, stream, pooled-or-maps) part that is needed once into plain
numpy arrays (`pipeline.training.data.load_split`: from the store's pack in a few large requests
when it covers the split, else video by video), in order, each against what is left of one memory
budget (parts above it keep only their layout and stream from Zarr). The store's index is read once
(the `FeatureStore` keeps it), and each store signature once. `Features.train_data` composes a
`TrainData` from those same arrays without copies: an ablation hands one `Features` to every trial
(on Ray through the object store, zero-copy), train-head builds its one `TrainData` from it, and
evaluate takes one split.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.progress import Note, Progress, emitter
from pipeline.splits import index_leak, leak_note
from pipeline.store import FeatureStore
from pipeline.training.data import SplitData, load_split
from pipeline.training.loop import TrainData
from pipeline.training.runs import store_signature
from pipeline.training.stats import stats_for_training

Need = tuple[str, bool]  # (stream, pooled)


@dataclass
class Features:
    classes: list[str]
    parts: dict[tuple[str, str, bool], SplitData]  # (split, stream, pooled) -> one-stream SplitData
    signatures: dict[tuple[tuple[str, ...], bool], dict[str, Any]]  # (streams, pooled) -> store signature
    stats: dict[Need, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)
    val_split: str = "val"

    def split(self, split: str, streams: tuple[str, ...], pooled: bool) -> SplitData:
        return _own_index(_join([self.parts[(split, s, pooled)] for s in streams]))

    def train_data(self, streams: tuple[str, ...], pooled: bool) -> TrainData:
        splits = [self.split(split, streams, pooled) for split in ("train", self.val_split)]
        stats = {s: self.stats[(s, pooled)] for s in streams if (s, pooled) in self.stats}
        return TrainData(train=splits[0], val=splits[1], classes=list(self.classes), stats=stats)

    def signature(self, streams: tuple[str, ...], pooled: bool) -> dict[str, Any]:
        return self.signatures[(tuple(streams), pooled)]

    @property
    def nbytes(self) -> int:
        """Bytes of features held in memory (streamed parts count zero)."""
        return sum(sum(s.frames.nbytes for s in part.streams.values() if s.frames is not None)
                   for part in self.parts.values())


def load_features(store: FeatureStore, *, uses: Iterable[tuple[tuple[str, ...], bool]], splits: tuple[str, ...],
                  memory_budget_bytes: float, storage_options: dict[str, Any] | None = None,
                  standardize: bool = False, stats_dir: str = "", signature_split: str = "train",
                  signatures: dict[tuple[tuple[str, ...], bool], dict[str, Any]] | None = None,
                  progress: Progress | None = None, skip_damaged: bool = False) -> Features:
    """Read the parts that `uses` ((streams, pooled) per consumer) need for `splits`, once.

    Maps (spatial heads) load before pooled vectors, so the largest parts get the budget first;
    `progress` gets each read as a "loading <split>" task and a Note of where each part lives (and
    when val shares groups with train: a leak); `signatures` already computed by the caller are
    not computed again; `skip_damaged`: videos with a damaged chunk are left out with a note
    (`load_split`), so the statistics computed from the loaded train part leave them out too.
    """
    emit = emitter(progress)
    uses = list(dict.fromkeys((tuple(streams), bool(pooled)) for streams, pooled in uses))
    needed = sorted({(s, pooled) for streams, pooled in uses for s in streams}, key=lambda k: (k[1], k[0]))
    parts: dict[tuple[str, str, bool], SplitData] = {}
    budget = memory_budget_bytes
    for stream, pooled in needed:
        for split in dict.fromkeys(splits):
            part = load_split(store, split, streams=(stream,), pooled=pooled, memory_budget_bytes=max(budget, 1.0),
                              storage_options=storage_options, progress=progress, skip_damaged=skip_damaged)
            if not part.streamed:
                budget -= part.nbytes
            kind = "vectors" if pooled else "maps"
            where = "streamed from Zarr (over the memory budget)" if part.streamed else "in memory"
            emit(Note(f"{split} {stream} {kind}: {len(part)} videos, {part.nbytes / 2**20:.1f} MiB {where} "
                      f"(memory budget {memory_budget_bytes / 2**30:.1f} GiB)"))
            parts[(split, stream, pooled)] = part
    known = dict(signatures or {})
    signatures = {use: known.get(use) or store_signature(store, use[0], pooled=use[1], split=signature_split)
                  for use in uses}
    stats = {}
    if standardize:  # from the train parts just loaded (or kept with the pack, the store or the run)
        for stream, pooled in needed:
            found = stats_for_training(store, parts[("train", stream, pooled)], stream, pooled=pooled,
                                       run_dir=stats_dir)
            stats[(stream, pooled)] = (tuple(found.mean), tuple(found.std))  # plain floats: no read-only arrays
    val = next((s for s in splits if s != "train"), splits[0])
    shared = index_leak(store.index(), "train", val) if "train" in splits and val != "train" else []
    if shared:  # the split the user gave: said once, as a note
        emit(Note(leak_note(shared, "train", val)))
    return Features(classes=store.classes, parts=parts, signatures=signatures, stats=stats, val_split=val)


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
