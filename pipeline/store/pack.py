"""The pack: every complete video's pooled features back to back, for stage two's few large reads.

    pack/<array>/            attrs: fingerprint (of the packed video keys), videos, frames,
                             from_maps (maps averaged over (y, x)), stats (per split: the channel
                             mean and std of its packed vectors, `pipeline.moments`, with the
                             fingerprint of its keys), complete=true (written last)
       frames                (view, frame, channel) float16, ~32 MiB chunks
       key, split            (video,) the video's store key and split, sorted by (split, video id)
       offset, length        (video,) int64: first frame in `frames`, frame count

Why a pack and not sharding: stage two reads a whole split, and per-video groups cost one request
(or one file open) per video and array however they are sharded; Zarr v3 sharding would put many
chunks of one array into one object, but each video is its own array. The pack turns 100k videos
into ~80 chunk reads. The per-video groups stay the store's truth (written one per worker, resumed,
killed safely); the pack is derived from them, rebuilt by `stpipe pack` and at the end of extract
and import when the complete set changed, and ignored where it does not cover a split (readers then
fall back to the per-video groups). Only pooled vectors are packed: spatial maps are 49x larger, and
a second copy of them would double the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline.errors import StoreError
from pipeline.faults import fault_point
from pipeline.moments import Moments, split_fingerprint
from pipeline.progress import Advanced, Finished, Progress, Started, emitter
from pipeline.store.io import META, checksummed, read_arrays

PACK_GROUP = "pack"
PACK_CHUNK_BYTES = 32 * 2**20
# no compressor: pooled float16 features do not compress (benchmarks/README.md, issue 31), and a
# codec would cost every run that reads the pack its decoding
PACKED_ARRAYS = ("rgb", "flow_feat")


@dataclass
class Pack:
    """An opened, complete pack of one array: the small columns in memory, frames read on demand."""

    name: str
    frames: object  # the zarr array
    keys: np.ndarray
    splits: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    from_maps: bool
    fingerprint: str
    stats: dict  # {split: {fingerprint, videos, values, mean, std}} of the packed vectors
    def rows_of(self, keys: np.ndarray) -> np.ndarray | None:
        """Pack rows of `keys` (in their order), or None when any is not packed."""
        order = np.argsort(self.keys, kind="stable")
        sorted_keys = self.keys[order]
        at = np.searchsorted(sorted_keys, keys)
        at = np.clip(at, 0, max(len(sorted_keys) - 1, 0))
        if len(sorted_keys) == 0 or not np.array_equal(sorted_keys[at], keys):
            return None
        return order[at]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(views, sum of lengths, C) float16 of these rows, back to back in their order."""
        if len(rows) == 0:
            return np.empty((self.frames.shape[0], 0, *self.frames.shape[2:]), dtype=np.float16)
        lo, hi = int(rows.min()), int(rows.max())
        start, stop = int(self.offsets[lo]), int(self.offsets[hi] + self.lengths[hi])
        block = self.frames[:, start:stop]  # one slice: zarr reads its chunks concurrently
        if np.array_equal(rows, np.arange(lo, hi + 1)):
            return np.ascontiguousarray(block)
        index = np.concatenate([np.arange(self.offsets[r], self.offsets[r] + self.lengths[r]) for r in rows]) - start
        return block[:, index]


def fingerprint(keys) -> str:
    return hashlib.sha256("\n".join(map(str, keys)).encode()).hexdigest()[:32]


def open_pack(store, name: str) -> Pack | None:
    """The complete pack of array `name`, or None (absent, being rebuilt, cut short); opened once
    per FeatureStore (its small columns are read once however many splits are loaded)."""
    cache = store.__dict__.setdefault("_packs", {})
    if name not in cache:
        cache[name] = _open(store, name)
    return cache[name]


def _open(store, name: str) -> Pack | None:
    try:
        group = store.root[f"{PACK_GROUP}/{name}"]
        attrs = dict(group.attrs)
        if not attrs.get("complete"):
            return None
        columns = {c: np.asarray(group[c][...]) for c in ("key", "split", "offset", "length")}
        return Pack(name=name, frames=group["frames"], keys=_strings(columns["key"]), splits=_strings(columns["split"]),
                    offsets=columns["offset"].astype(np.int64), lengths=columns["length"].astype(np.int64),
                    from_maps=bool(attrs.get("from_maps")), fingerprint=str(attrs.get("fingerprint", "")),
                    stats=dict(attrs.get("stats") or {}))
    except Exception:  # noqa: BLE001 - absent or cut short (any zarr error): the readers fall back
        return None


def packed_order(index: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Keys and splits of the complete videos in pack order: by split, then video id."""
    ok = index["status"] == "complete"
    ids, splits, keys = _strings(index["video_id"][ok]), _strings(index["split"][ok]), _strings(index["key"][ok])
    order = np.lexsort((ids, splits))
    return keys[order], splits[order]


def pack_is_fresh(store, name: str) -> bool:
    keys, _ = packed_order(store.index())
    found = open_pack(store, name)
    return found is not None and found.fingerprint == fingerprint(keys)


def write_pack(store, *, names: tuple[str, ...] | None = None, force: bool = False,
               progress: Progress | None = None) -> dict[str, str]:
    """Build (or keep) the pack of each feature array of the store's complete videos.

    Returns {array: "written" | "fresh" | "absent"}. A pack whose fingerprint matches the index's
    complete set is kept unless `force`. `progress`: a "pack <array>" task (videos) per pack written.
    """
    if store.read_only:
        raise StoreError(f"{store.url}: opened read-only; cannot write its pack")
    index = store.index()
    keys, splits = packed_order(index)
    want = fingerprint(keys)
    out: dict[str, str] = {}
    if len(keys) == 0:
        return {name: "absent" for name in (names or PACKED_ARRAYS)}
    first = {rel.split("/")[-2]: doc for rel, doc in
             store.io.read_json(f"videos/{keys[0]}/{n}/{META}" for n in (names or PACKED_ARRAYS))}
    for name in names or PACKED_ARRAYS:
        doc = first.get(name)
        if doc is None or len(doc.get("shape", ())) not in (3, 5):
            out[name] = "absent"
            continue
        existing = open_pack(store, name)
        if existing is not None and existing.fingerprint == want and not force:
            out[name] = "fresh"
            continue
        _build(store, name, keys, splits, want, progress)
        out[name] = "written"
    return out


def _build(store, name: str, keys: np.ndarray, splits: np.ndarray, want: str,
           progress: Progress | None) -> None:
    rels = [f"videos/{k}/{name}" for k in keys]
    shapes = []  # only the shapes are kept: 100k parsed documents would be ~300 MB
    for key, (_, doc) in zip(keys, store.io.read_json(f"{rel}/{META}" for rel in rels)):
        if doc is None or "shape" not in doc:
            raise StoreError(f"{store.url}: video {key!r} has no {name!r} array; cannot pack it")
        shapes.append(tuple(doc["shape"]))
    first = shapes[0]
    for key, shape in zip(keys, shapes):
        if len(shape) != len(first) or shape[0] != first[0] or shape[2:] != first[2:]:
            raise StoreError(f"{store.url}: {name!r} of video {key!r} has shape {shape}, unlike {first} "
                             f"of {keys[0]!r}; cannot pack videos of different views or frame shapes")
    plan = PackPlan.of(name, keys, splits, np.array([s[1] for s in shapes], dtype=np.int64), first)
    create_pack(store, plan)
    part = PackSlice(store, plan)
    emit, task = emitter(progress), f"pack {name}"
    emit(Started(task, total=len(rels), unit="video", transient=True))
    for i, values in enumerate(read_arrays(store, rels)):
        part.add(i, values)
        if i % 1024 == 0 or i == len(rels) - 1:
            emit(Advanced(task, n=0, done=i + 1))
    finish_pack(store, plan, [part.close()], want)
    emit(Finished(task))


@dataclass
class PackPlan:
    """Where each video's frames go in one array's pack (plain values: worker processes get it)."""

    name: str
    keys: np.ndarray  # in pack order
    splits: np.ndarray
    lengths: np.ndarray
    views: int
    channels: int
    from_maps: bool
    per_chunk: int  # frames a chunk

    @classmethod
    def of(cls, name: str, keys: np.ndarray, splits: np.ndarray, lengths: np.ndarray, shape: tuple[int, ...]):
        """`shape`: one video's array, (views, time, C) or (views, time, C, y, x)."""
        views, channels, total = int(shape[0]), int(shape[2]), int(lengths.sum())
        # chunks of at most PACK_CHUNK_BYTES, all about as long: zarr stores the last one whole
        # (padded), and without a compressor its padding would be bytes on disk and reads
        chunks = max(1, -(-total * views * channels * 2 // PACK_CHUNK_BYTES))
        return cls(name, keys, splits, lengths, views, channels, len(shape) == 5, max(1, -(-total // chunks)))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def total(self) -> int:
        return int(self.lengths.sum())

    def chunk_frames(self, chunk: int) -> int:
        return min(self.per_chunk, self.total - chunk * self.per_chunk)

    def split_frames(self) -> dict[str, tuple[int, int]]:
        """{split: (first frame, end)}: in pack order each split is one run of rows."""
        ends = np.concatenate([self.offsets, [self.total]])
        out = {}
        for split in np.unique(self.splits).tolist():
            rows = np.flatnonzero(self.splits == split)
            out[split] = (int(ends[rows[0]]), int(ends[rows[-1] + 1]))
        return out


def create_pack(store, plan: PackPlan) -> None:
    """The pack's group, marked incomplete (readers ignore it), and its empty frames array."""
    store.__dict__.get("_packs", {}).pop(plan.name, None)
    if f"{PACK_GROUP}/{plan.name}" in store.root:
        del store.root[f"{PACK_GROUP}/{plan.name}"]
    group = store.root.require_group(PACK_GROUP).create_group(plan.name, overwrite=True, attributes={"complete": False})
    group.create_array("frames", shape=(plan.views, plan.total, plan.channels), dtype=np.float16,
                       chunks=(plan.views, plan.per_chunk, plan.channels), compressors=checksummed(compress=False),
                       dimension_names=("view", "frame", "channel"), fill_value=0)


class PackSlice:
    """Pack rows [first, stop) given in order (`add`), by one writer: each chunk whose frames all
    belong to these rows is written as it fills; pieces of chunks shared with the neighbouring
    slices, and each split's moments, come back from `close` for `finish_pack`."""

    def __init__(self, store, plan: PackPlan, first: int = 0, stop: int | None = None):
        self.store, self.plan = store, plan
        self.frames = store.root[f"{PACK_GROUP}/{plan.name}/frames"]
        self.next_row, self.stop = first, len(plan.keys) if stop is None else stop
        offsets = plan.offsets
        position = int(offsets[first]) if first < len(plan.keys) else plan.total
        self.chunk, self.lo = divmod(position, plan.per_chunk)
        self.filled = self.lo
        self.buffer = np.zeros((plan.views, plan.per_chunk, plan.channels), dtype=np.float16)
        self.pieces: list[tuple[int, int, np.ndarray]] = []
        self.split_frames = plan.split_frames()
        self.moments = {split: Moments() for split in np.unique(plan.splits[first:self.stop]).tolist()}

    def add(self, row: int, values: np.ndarray) -> None:
        """The video of pack row `row` (the next one): (views, time, C) vectors or (..., y, x) maps."""
        plan = self.plan
        if row != self.next_row or row >= self.stop:
            raise ValueError(f"pack rows go in order: expected {self.next_row}, got {row}")
        if plan.from_maps:  # as `pipeline.training.data.read_array` pools: float32 mean, then float16
            values = values.astype(np.float32).mean(axis=(-2, -1))
        values = np.asarray(values, dtype=np.float16)
        if values.shape != (plan.views, plan.lengths[row], plan.channels):
            raise StoreError(f"{self.store.url}: {plan.name!r} of video {plan.keys[row]!r} has shape {values.shape}; "
                             f"the pack planned {(plan.views, int(plan.lengths[row]), plan.channels)}")
        done = 0
        while done < values.shape[1]:
            end = plan.chunk_frames(self.chunk)
            take = min(values.shape[1] - done, end - self.filled)
            self.buffer[:, self.filled:self.filled + take] = values[:, done:done + take]
            self.filled, done = self.filled + take, done + take
            if self.filled == end:
                self._flush(end)
        self.next_row += 1

    def _flush(self, end: int) -> None:
        """Write (or keep, when shared) the buffer's frames [lo, end), and add them to their splits' moments."""
        first = self.chunk * self.plan.per_chunk
        for split, moments in self.moments.items():  # a few large blocks, not one small one per video
            a, b = self.split_frames[split]
            lo, hi = max(a - first, self.lo), min(b - first, end)
            if lo < hi:
                moments.add(self.buffer[:, lo:hi])
        if self.lo == 0 and end == self.plan.chunk_frames(self.chunk):
            start = self.chunk * self.plan.per_chunk
            self.frames[:, start:start + end] = self.buffer[:, :end]
        elif end > self.lo:
            self.pieces.append((self.chunk, self.lo, self.buffer[:, self.lo:end].copy()))
        self.chunk, self.lo, self.filled = self.chunk + 1, 0, 0

    def close(self) -> tuple[list[tuple[int, int, np.ndarray]], dict[str, Moments]]:
        if self.next_row != self.stop:
            raise ValueError(f"pack rows {self.next_row}..{self.stop} never came")
        if self.filled > self.lo:
            self._flush(self.filled)
        return self.pieces, self.moments


def finish_pack(store, plan: PackPlan, parts: list[tuple[list, dict[str, Moments]]], want: str) -> None:
    """Write the chunks the slices shared, the columns and each split's stats; mark it complete."""
    group = store.root[f"{PACK_GROUP}/{plan.name}"]
    shared: dict[int, list[tuple[int, np.ndarray]]] = {}
    moments = {split: Moments() for split in np.unique(plan.splits).tolist()}
    for pieces, found in parts:
        for chunk, lo, values in pieces:
            shared.setdefault(chunk, []).append((lo, values))
        for split, m in found.items():
            moments[split].merge(m)
    for chunk, pieces in sorted(shared.items()):
        end = plan.chunk_frames(chunk)
        block = np.zeros((plan.views, end, plan.channels), dtype=np.float16)
        covered = 0
        for lo, values in pieces:
            block[:, lo:lo + values.shape[1]] = values
            covered += values.shape[1]
        if covered != end:
            raise ValueError(f"pack chunk {chunk}: {covered} of {end} frames came")
        start = chunk * plan.per_chunk
        group["frames"][:, start:start + end] = block
    for column, values, dtype in (("key", plan.keys, str), ("split", plan.splits, str),
                                  ("offset", plan.offsets, None), ("length", plan.lengths, None)):
        array = group.create_array(column, shape=values.shape, dtype=dtype or values.dtype, compressors=checksummed(),
                                   chunks=(max(1, len(values)),), dimension_names=("video",))
        array[:] = values
    stats = {}
    for split, found in moments.items():
        mean, std = found.mean_std()
        in_split = plan.keys[plan.splits == split]
        stats[split] = {"fingerprint": split_fingerprint(in_split), "videos": len(in_split), "values": found.count,
                        "mean": mean.tolist(), "std": std.tolist()}
    fault_point("pack")
    group.update_attributes({"fingerprint": want, "videos": len(plan.keys), "frames": plan.total,
                             "from_maps": plan.from_maps, "stats": stats, "complete": True})
    store.__dict__.get("_packs", {}).pop(plan.name, None)


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([str(v) for v in values.tolist()], dtype=str)
