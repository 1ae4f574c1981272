"""The pack: every complete video's pooled features back to back, for stage two's few large reads.

    pack/<array>/            attrs: fingerprint (of the packed video keys), videos, frames,
                             from_maps (maps averaged over (y, x)), complete=true (written last)
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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import StoreError
from pipeline.faults import fault_point
from pipeline.store_io import META, checksummed, read_arrays

PACK_GROUP = "pack"
PACK_CHUNK_BYTES = 32 * 2**20
PACKED_ARRAYS = ("rgb", "flow_feat")


def PACK_COMPRESSOR():  # noqa: N802 - a constant made on demand (zarr is imported lazily)
    from zarr.codecs import BloscCodec

    # lz4: the pack is written once and read by every run; lz4 decodes several times faster than
    # the per-video arrays' zstd, for a few percent more bytes on float16 features
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")  # features; `flow` (optical flow fields) is not a head's input


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
                    from_maps=bool(attrs.get("from_maps")), fingerprint=str(attrs.get("fingerprint", "")))
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
               progress: Callable[[str, int, int], None] | None = None) -> dict[str, str]:
    """Build (or keep) the pack of each feature array of the store's complete videos.

    Returns {array: "written" | "fresh" | "absent"}. A pack whose fingerprint matches the index's
    complete set is kept unless `force`. `progress(array, videos_done, videos)`.
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
           progress: Callable[[str, int, int], None] | None) -> None:
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
    views, channels, from_maps = int(first[0]), int(first[2]), len(first) == 5
    lengths = np.array([s[1] for s in shapes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    total = int(lengths.sum())
    per_chunk = max(1, PACK_CHUNK_BYTES // (views * channels * 2))
    store.__dict__.get("_packs", {}).pop(name, None)
    if f"{PACK_GROUP}/{name}" in store.root:
        del store.root[f"{PACK_GROUP}/{name}"]
    group = store.root.require_group(PACK_GROUP).create_group(name, overwrite=True,
                                                              attributes={"complete": False})
    frames = group.create_array("frames", shape=(views, total, channels), dtype=np.float16,
                                chunks=(views, per_chunk, channels), compressors=checksummed(PACK_COMPRESSOR()),
                                dimension_names=("view", "frame", "channel"), fill_value=0)
    buffer = np.zeros((views, per_chunk, channels), dtype=np.float16)
    filled, start = 0, 0
    for i, values in enumerate(read_arrays(store, rels)):
        if from_maps:  # as `pipeline.training.data.read_array` pools: float32 mean, then float16
            values = values.astype(np.float32).mean(axis=(-2, -1))
        values = np.asarray(values, dtype=np.float16)
        done = 0
        while done < values.shape[1]:
            take = min(values.shape[1] - done, per_chunk - filled)
            buffer[:, filled:filled + take] = values[:, done:done + take]
            filled, done = filled + take, done + take
            if filled == per_chunk:
                frames[:, start:start + filled] = buffer
                start, filled = start + filled, 0
        if progress is not None and (i % 1024 == 0 or i == len(rels) - 1):
            progress(name, i + 1, len(rels))
    if filled:
        frames[:, start:start + filled] = buffer[:, :filled]
    for column, values, dims in (("key", keys, str), ("split", splits, str), ("offset", offsets, None),
                                 ("length", lengths, None)):
        array = group.create_array(column, shape=values.shape, dtype=dims or values.dtype, compressors=checksummed(),
                                   chunks=(max(1, len(values)),), dimension_names=("video",))
        array[:] = values
    fault_point("pack")
    group.update_attributes({"fingerprint": want, "videos": len(keys), "frames": total, "from_maps": from_maps,
                             "complete": True})
    store.__dict__.get("_packs", {}).pop(name, None)


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([str(v) for v in values.tolist()], dtype=str)
