"""Damaged data: every chunk of a store read back and checked (`stpipe verify`), and the repair.

A chunk of an array written with `io.checksummed` codecs ends in a crc32c of the rest, so
checking it needs no decompression; stores written before checksums are checked by decoding their
blosc chunks (damage that still decodes goes unseen there). Checked: each complete video's arrays,
and every array outside `videos/` (the pack, the index, cached statistics).

Repair: a damaged video's group is marked incomplete (`complete` false, the damage listed in its
`damaged` attr; a group whose own zarr.json is unreadable is deleted), so re-running the command
that made the store (extract, import) redoes exactly those videos. A damaged derived group (a pack
array, the index, a stats entry) is deleted: extract, import and `stpipe pack` rebuild the pack from
the groups, the index is rebuilt from the groups at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipeline.store.io import (
    META,
    chunk_damage,
    chunk_key,
    chunk_separator,
    group_document,
    key_to_id,
    video_key,
)
from pipeline.store.pack import write_pack

READ_BYTES = 256 * 2**20  # chunk bytes read at once per array (a pack chunk is 32 MiB)
OUTSIDE_VIDEOS = ("videos", "failures", "lease")  # top-level names that are not derived arrays


@dataclass(frozen=True)
class Damage:
    """A damaged chunk: `video_id` "" for arrays outside `videos/`, whose `array` is then the path."""

    video_id: str
    array: str
    chunk: str  # "c/0/0/0", or "zarr.json" when the metadata itself is unreadable
    reason: str

    def line(self) -> str:
        where = ": ".join(p for p in (self.video_id, self.array) if p)
        return f"{where} {self.chunk}: {self.reason}"


@dataclass
class Checked:
    """What one unit of work (a video, or an array outside `videos/`) held."""

    damage: list[Damage]
    chunks: int = 0
    nbytes: int = 0


def check_array(io, rel: str, doc: dict | None, video_id: str = "") -> Checked:
    """Read every stored chunk of the array at `rel` (its metadata `doc`) and check it."""
    name = rel.split("/", 2)[2] if video_id else rel
    if doc is None or doc.get("node_type") != "array":
        return Checked([Damage(video_id, name, META, "metadata unreadable")])
    separator = chunk_separator(doc)
    if doc.get("chunk_grid", {}).get("name") != "regular" or separator not in ("/", "."):
        return Checked([])  # not a layout stpipe writes: nothing to say about it
    shape = tuple(doc["shape"])
    chunks = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
    grid = [-(-s // c) for s, c in zip(shape, chunks)]
    try:
        itemsize = np.dtype(doc["data_type"]).itemsize
    except (TypeError, KeyError):  # strings: a guess is enough to size the reads
        itemsize = 16
    per_read = max(1, READ_BYTES // max(1, int(np.prod(chunks)) * itemsize))
    keys = [chunk_key(idx, separator) for idx in np.ndindex(*grid)]
    out = Checked([])
    for lo in range(0, len(keys), per_read):
        part = keys[lo:lo + per_read]
        found = io.read_bytes([f"{rel}/{key}" for key in part])
        for key in part:
            data = found.get(f"{rel}/{key}")
            if data is None:
                continue  # never written: the fill value
            out.chunks += 1
            out.nbytes += len(data)
            reason = chunk_damage(data, doc)
            if reason:
                out.damage.append(Damage(video_id, name, key, reason))
    return out


def check_video(io, key: str, *, names: Iterable[str] | None = None, complete_only: bool = True) -> Checked:
    """Check a video's arrays (`names`, default all it has); a group not marked complete is skipped
    (a re-run redoes it anyway) unless `complete_only` is false."""
    rel = f"videos/{key}"
    (_, group), = io.read_json([f"{rel}/{META}"])
    if group is None and not io.read_bytes([f"{rel}/{META}"]):
        return Checked([])  # no zarr.json: the folder of a cut-short delete, swept by the next run
    if group is None or group.get("node_type") != "group":
        return Checked([Damage(key_to_id(key) or key, "", META, "group metadata unreadable")])
    attrs = group.get("attributes") or {}
    if complete_only and not attrs.get("complete"):
        return Checked([])
    video_id = str(attrs.get("video_id") or key_to_id(key) or key)
    names = list(names) if names is not None else sorted(io.list_dirs(rel))
    docs = dict(io.read_json(f"{rel}/{name}/{META}" for name in names))
    out = Checked([])
    for name in names:
        found = check_array(io, f"{rel}/{name}", docs.get(f"{rel}/{name}/{META}"), video_id)
        out.damage += found.damage
        out.chunks += found.chunks
        out.nbytes += found.nbytes
    return out


def derived_arrays(io, rel: str = "") -> Iterator[tuple[str, dict | None]]:
    """(rel, metadata) of every array outside `videos/` (the pack, the index, stats, ...)."""
    for name in sorted(io.list_dirs(rel)):
        if not rel and name in OUTSIDE_VIDEOS:
            continue
        child = f"{rel}/{name}" if rel else name
        (_, doc), = io.read_json([f"{child}/{META}"])
        if (doc or {}).get("node_type") == "array" or (doc is None and "c" in io.list_dirs(child)):
            yield child, doc  # an array, or one whose metadata is unreadable
        else:
            yield from derived_arrays(io, child)


Unit = tuple[str, Callable[[], Checked]]


def store_units(store) -> list[Unit]:
    """The work of checking a store: (name, check) of every video (its key) and derived array (its path)."""
    io = store.io
    units: list[Unit] = [(key, lambda key=key: check_video(io, key)) for key in sorted(io.list_dirs("videos"))]
    return units + [(rel, lambda rel=rel, doc=doc: check_array(io, rel, doc)) for rel, doc in derived_arrays(io)]


def check_units(units: list[Unit], *, threads: int) -> Iterator[tuple[str, Checked]]:
    """(name, result) of each unit in order, `threads` checked at once."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        yield from zip((name for name, _ in units), pool.map(lambda unit: unit[1](), units))


def damaged_keys(store, keys: Iterable[str], names: Iterable[str], *, threads: int = 8) -> dict[str, list[Damage]]:
    """{key: damage} of the videos among `keys` whose arrays `names` (those they have) are damaged."""
    io = store.io
    names = tuple(names)

    def one(key: str) -> Checked:
        present = [n for n in names if n in io.list_dirs(f"videos/{key}")]
        return check_video(io, key, names=present, complete_only=False)

    units = [(key, lambda key=key: one(key)) for key in keys]
    return {key: found.damage for key, found in check_units(units, threads=threads) if found.damage}


def repair(store, damage: list[Damage]) -> dict[str, int]:
    """Mark the damaged videos for redo and delete the damaged derived groups (module docstring);
    the caller holds the store's lease. Returns {"videos": n, "derived": n}."""
    io = store.io
    by_video: dict[str, list[Damage]] = {}
    for d in damage:
        if d.video_id:
            by_video.setdefault(d.video_id, []).append(d)
    for video_id, found in by_video.items():
        rel = f"videos/{video_key(video_id)}"
        (_, group), = io.read_json([f"{rel}/{META}"])
        if group is None or any(d.chunk == META and not d.array for d in found):
            io.delete_tree(rel)
            continue
        attrs = dict(group.get("attributes") or {})
        attrs.update(complete=False, damaged=[d.line() for d in found])
        io.put(f"{rel}/{META}", group_document(attrs))
    derived = sorted({d.array.rsplit("/", 1)[0] for d in damage if not d.video_id})
    for rel in derived:
        io.delete_tree(rel)
    if by_video or derived:
        # the index lists those videos complete, and stpipe trusts that for groups it never rewrites:
        # rebuilt from the groups themselves
        io.delete_tree("index")
        store.__dict__.pop("_packs", None)
        store._index = None
        store.write_index()
    if any(rel.startswith("pack/") for rel in derived):
        write_pack(store)  # from the groups (a complete set changed since is rebuilt by the next extract anyway)
    return {"videos": len(by_video), "derived": len(derived)}
