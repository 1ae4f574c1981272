"""The feature store: a Zarr v3 group with a fixed layout and provenance attrs.

    <store>/                 attrs["stpipe"]: version, created, config, config_hash, manifest_sha256,
                             classes, backbone, flow, views
      videos/<key>/          one group per video, written by exactly one worker;
                             attrs: video_id, path, label, label_index, split, group, fps,
                             num_frames, frame_index, complete=true (written LAST)
         rgb                 (view, time, channel[, y, x]) float16
         flow                (time, 2, y, x) uint8 (quantised, bound in attrs) or float16
         flow_feat           (view, time, channel[, y, x]) float16
      failures/<key>/        attrs: video_id, path, stage, error, attempts (one group per failed video,
                             so concurrent workers never rewrite a shared list)
      index/                 columnar arrays written at the end: video_id, key, label, split,
                             num_frames, status, group ("" for none; stores made before groups
                             have no `group` array and read as all ""); attrs: failures (list),
                             complete=true (written last)

`key` is a reversible, filesystem-safe encoding of the video id (see `video_key`), so no id can
escape the store. Every array's chunks end in a crc32c (`io.checksummed`; `stpipe verify`). Works on any fsspec URL (`file://`, `memory://`, `s3://...`) and local paths.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import shutil
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import StoreError
from pipeline.faults import fault_point
from pipeline.splits import index_leak
from pipeline.store.io import (
    CHUNK_SEPARATOR,
    META,
    StoreIO,
    array_document,
    checksummed,
    chunk_key,
    encode_chunk,
    group_document,
    jsonable,
    key_to_id,
    video_key,
)
from pipeline.store.urls import explain, is_local, local_path, resolve_url

FORMAT_VERSION = 1
CHUNK_BYTES = 8 * 2**20  # ~8 MiB: a typical video is one chunk per view, one or two reads
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr's LocalStore temp files (write, then rename)


def time_chunk(frame_shape: tuple[int, ...], itemsize: int, num_frames: int) -> int:
    """Frames per chunk so one chunk holds a whole typical video but stays near CHUNK_BYTES."""
    per_frame = max(1, int(np.prod(frame_shape)) * itemsize)
    return int(max(1, min(num_frames, CHUNK_BYTES // per_frame)))


@dataclass(frozen=True)
class Failure:
    video_id: str
    path: str
    stage: str
    error: str
    attempts: int


class FeatureStore:
    """Read/write access to one store. Create with `FeatureStore.create` or `FeatureStore.open`."""

    def __init__(self, group, url: str, storage_options: Mapping[str, Any] | None = None):
        self.root = group
        self.url = url
        self.io = StoreIO(url, storage_options)  # the hot paths (writes, resume scan) without zarr's per-call cost
        self._index: dict[str, np.ndarray] | None = None  # read once per FeatureStore (see `index`)
        self._failure_keys: set[str] | None = None  # object stores: failure groups listed once
        self._listed: set[str] | None = None  # object stores: the keys under videos/ at the last scan

    # ---- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, mode: str = "r", storage_options: Mapping[str, Any] | None = None) -> FeatureStore:
        import zarr

        target, opts = resolve_url(url, storage_options, creating=False)
        try:
            group = zarr.open_group(store=target, mode=mode, storage_options=opts)
        except FileNotFoundError:
            raise StoreError(f"{url}: no feature store here") from None
        except Exception as exc:  # noqa: BLE001 - fsspec/zarr raise many types
            raise StoreError(f"{url}: cannot open store ({explain(exc)})") from None
        if "stpipe" not in group.attrs:
            raise StoreError(f"{url}: not an stpipe feature store (no 'stpipe' attrs)")
        return cls(group, url, opts)

    @classmethod
    def create(
        cls,
        url: str,
        *,
        provenance: Mapping[str, Any],
        overwrite: bool = False,
        storage_options: Mapping[str, Any] | None = None,
    ) -> FeatureStore:
        """Create a store, or reopen one made by the same config (`provenance['config_hash']`).

        A store made by a different config is refused unless `overwrite`, which deletes it.
        """
        import zarr

        target, opts = resolve_url(url, storage_options, creating=True)
        try:
            existing = zarr.open_group(store=target, mode="r", storage_options=opts)
        except (FileNotFoundError, KeyError, ValueError):
            existing = None
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{url}: cannot open store ({explain(exc)})") from None
        if existing is not None and not overwrite:
            meta = existing.attrs.get("stpipe")
            if meta is None:
                if [key for key in existing.keys() if key != "lease"]:  # our own lease is not content
                    raise StoreError(f"{url}: exists and is not an stpipe store; pick another -o or --overwrite")
            else:
                _check_same(url, meta, provenance)
                group = zarr.open_group(store=target, mode="r+", storage_options=opts)
                group.require_group("videos")  # a creation cut short after the root's attrs
                group.require_group("failures")
                return cls(group, url, opts)
        meta = dict(provenance)
        meta.setdefault("version", FORMAT_VERSION)
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        try:
            # the root's zarr.json is born with its stpipe attrs: a kill here leaves no half-made store
            group = zarr.open_group(store=target, mode="w" if overwrite else "a", storage_options=opts,
                                    attributes={"stpipe": jsonable(meta)})
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{url}: cannot create store ({explain(exc)})") from None
        group.attrs["stpipe"] = jsonable(meta)  # an existing, empty group ignores `attributes`
        group.require_group("videos")
        group.require_group("failures")
        return cls(group, url, opts)

    # ---- provenance -------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.root.attrs["stpipe"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    # ---- videos -----------------------------------------------------------------------------

    def video_group(self, video_id: str):
        return self.root["videos"][video_key(video_id)]

    def is_complete(self, video_id: str) -> bool:
        try:
            return bool(self.video_group(video_id).attrs.get("complete", False))
        except KeyError:
            return False

    def complete_ids(self) -> set[str]:
        """Ids of the complete videos: the resume scan (see `_rows`; one listing, documents only
        for the videos the index does not already know as complete)."""
        return {row[0] for row in self._rows()[0] if row[5] == "complete"}

    def begin_video(self, video_id: str, attrs: Mapping[str, Any], *, announce: bool = True) -> VideoWriter:
        """Start (or restart) a video's group; nothing is complete until `VideoWriter.finish`.

        The group's zarr.json is born with every attribute (one write; `complete` false). A writer
        that holds every array already (import) need not `announce` it: `finish` writes it once, and
        until then a killed run leaves a folder without zarr.json, which the resume scan skips and
        `remove_debris` or the next `begin_video` removes, as any half-written group.
        """
        key = video_key(video_id)
        rel = f"videos/{key}"
        # replaces a half-written group from a crash, and also the remains of a delete cut short by
        # one (arrays whose group zarr.json is already gone, invisible to `key in videos`); a key the
        # resume scan did not list has nothing to remove (saves a LIST per video on object stores)
        listed = self._listed
        self.io.delete_tree(rel, known_absent=listed is not None and key not in listed)
        if listed is not None:
            listed.add(key)  # a second attempt at this video in this run removes the first one's writes
        doc = {**attrs, "video_id": video_id, "complete": False}
        if announce:
            self.io.put(f"{rel}/{META}", group_document(doc))
        fault_point("begin")
        return VideoWriter(self, rel, doc)

    def remove_debris(self) -> list[str]:
        """Delete what a killed writer leaves on a local disk outside the groups it redoes anyway:
        zarr's `*.<hex>.partial` temp files and group folders whose zarr.json a cut-short delete
        removed. Returns the removed paths. Call it only while holding the store's lease (another
        live writer's temp files look the same). Object stores write whole objects: nothing to do.
        """
        if not is_local(self.url):
            return []
        root = Path(local_path(self.url))
        groups = [root / "videos", root / "failures"]  # their members are groups with a zarr.json
        folders = [root, *groups, root / "index"]
        folders += [p for p in groups[1].iterdir() if p.is_dir()] if groups[1].is_dir() else []
        removed = []
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.is_file() and _PARTIAL.search(path.name):
                    path.unlink(missing_ok=True)
                elif folder in groups and path.is_dir() and not (path / "zarr.json").exists():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    continue
                removed.append(str(path))
        return removed

    def discard_video(self, video_id: str) -> None:
        """Remove a video's (incomplete) group, e.g. after it failed for good."""
        self.io.delete_tree(f"videos/{video_key(video_id)}")

    def read(self, video_id: str, name: str, view: int | slice | None = None) -> np.ndarray:
        array = self.video_group(video_id)[name]
        return array[view] if view is not None else array[...]

    def video_attrs(self, video_id: str) -> dict[str, Any]:
        return dict(self.video_group(video_id).attrs)

    # ---- failures ---------------------------------------------------------------------------

    def record_failure(self, failure: Failure) -> None:
        key = video_key(failure.video_id)
        self.io.put(f"failures/{key}/{META}", group_document(jsonable(failure.__dict__)))  # one write, whole
        if self._failure_keys is not None:
            self._failure_keys.add(key)
        fault_point("failure")

    def clear_failure(self, video_id: str) -> None:
        key = video_key(video_id)
        if not self.io.local:  # a LIST per video on object stores otherwise; failures are few
            if self._failure_keys is None:
                self._failure_keys = set(self.io.list_dirs("failures"))
            if key not in self._failure_keys:
                return
            self._failure_keys.discard(key)
        self.io.delete_tree(f"failures/{key}")

    def failures(self) -> list[Failure]:
        keys = self.io.list_dirs("failures")
        out = []
        for _, doc in self.io.read_json(f"failures/{key}/{META}" for key in keys):
            attrs = (doc or {}).get("attributes") or {}
            if all(k in attrs for k in Failure.__dataclass_fields__):
                out.append(Failure(**{k: attrs[k] for k in Failure.__dataclass_fields__}))
        return sorted(out, key=lambda f: f.video_id)

    # ---- index ------------------------------------------------------------------------------

    def write_index(self, written: Iterable[tuple] = ()) -> dict[str, np.ndarray]:
        """Consolidate per-video attrs into columnar arrays (`complete` set last).

        Incremental (see `_rows`); when the groups and failures say what the index already says,
        nothing is rewritten (an invalidated index is only marked complete again). `written`: the
        `index_row`s of videos this run completed, whose documents need not be read back.
        """
        rows, failures = self._rows(written=written)
        columns = _columns(rows)
        failed = [jsonable(f.__dict__) for f in failures]
        old = self._stored_index()
        if old is not None and _same_columns(old[0], columns) and jsonable(old[1].get("failures", [])) == failed:
            if not old[1].get("complete"):
                self.root["index"].attrs["complete"] = True
            self._index = columns
            return columns
        if "index" in self.root:
            del self.root["index"]
        fault_point("index")
        index = self.root.create_group("index", overwrite=True)  # also clears a delete cut short
        for name, values in columns.items():
            dtype = str if values.dtype.kind == "U" else values.dtype
            array = index.create_array(name, shape=values.shape, dtype=dtype, dimension_names=("video",),
                                       compressors=checksummed(),
                                       chunks=(max(1, len(values)),))
            if len(values):
                array[:] = values
        index.attrs["failures"] = failed
        fault_point("index")
        index.attrs["complete"] = True
        self._index = columns
        return columns

    def invalidate_index(self) -> None:
        """Mark the index stale before a run changes the videos; `write_index` at its end renews it.

        A run killed in between leaves no index that contradicts the groups (readers rescan). Its
        rows of complete videos stay true (a complete video is never rewritten), so the next scan
        reads only the groups it does not list as complete.
        """
        self._index = None
        if "index" in self.root and self.root["index"].attrs.get("complete"):
            self.root["index"].attrs["complete"] = False

    def index_is_current(self) -> bool:
        """Whether the consolidated index was written after the last change to the videos."""
        return "index" in self.root and bool(self.root["index"].attrs.get("complete"))

    def index(self) -> dict[str, np.ndarray]:
        """The consolidated index, or an on-the-fly one when it is missing or stale.

        Read once per FeatureStore: every later call (signature, splits, stats) gets the same arrays.
        """
        if self._index is not None:
            return self._index
        stored = self._stored_index()
        if stored is not None and stored[1].get("complete"):
            self._index = stored[0]
        elif not self.read_only:
            self.write_index()
        else:
            self._index = _columns(self._rows()[0])
        return self._index

    @property
    def read_only(self) -> bool:
        return bool(getattr(self.root, "read_only", False))

    def _stored_index(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The index arrays and attrs as stored (complete or not); None when absent or cut short."""
        try:
            group = self.root["index"]
            attrs = dict(group.attrs)
            columns = {name: np.asarray(group[name][...]) for name in INDEX_COLUMNS if name != "group"}
            # stores made before groups existed: no group array, every video its own group
            columns["group"] = (np.asarray(group["group"][...]) if "group" in group
                                else np.full(len(columns["key"]), "", dtype=str))
        except Exception:  # noqa: BLE001 - absent, or a kill mid-rewrite (any zarr error): rescan instead
            return None
        if len({len(v) for v in columns.values()}) != 1:
            return None
        return columns, attrs

    def _scan_index(self) -> dict[str, np.ndarray]:
        """The index from the groups themselves, every group read (the truth `write_index` must equal)."""
        return _columns(self._rows(trust_index=False)[0])

    def _rows(self, *, trust_index: bool = True, written: Iterable[tuple] = ()) -> tuple[list[tuple], list[Failure]]:
        """One row (video_id, key, label, split, num_frames, status, group) per video group, plus failed
        videos without one, sorted by id; and the failures.

        One listing of `videos/`; the groups a stored index (complete or invalidated) lists as
        complete are taken from it, since stpipe never rewrites a complete video; only the others'
        zarr.json are read (locally also those modified since the index was written). Memory: the rows themselves, nothing per group beyond them.
        """
        failures = self.failures()
        failed = {f.video_id for f in failures}
        known: dict[str, tuple] = {}
        stored = self._stored_index() if trust_index else None
        if stored is not None:
            c = stored[0]
            for vid, key, label, split, frames, status, group in zip(*(c[n].tolist() for n in INDEX_COLUMNS)):
                if status == "complete":
                    known[str(key)] = (str(vid), str(key), int(label), str(split), int(frames), "complete", str(group))
            del stored, c
        rows, unknown = [], []
        since = self.io.mtime_ns(f"index/{META}") if known and self.io.local else None
        fresh = {row[1]: row for row in written}
        listed = self.io.list_dirs("videos")
        if not self.io.local:
            self._listed = set(listed)
        for key in listed:
            row = known.get(key)
            # on a local disk a stat is cheap: a group touched after the index was (by hand, or by
            # a tool other than stpipe) is read again
            if key in fresh:
                rows.append(fresh[key])
            elif row is not None and (since is None or self.io.mtime_ns(f"videos/{key}/{META}") < since):
                rows.append(row)
            else:
                unknown.append(key)
        del known, fresh
        for rel, doc in self.io.read_json(f"videos/{key}/{META}" for key in unknown):
            if doc is None or doc.get("node_type") != "group":
                continue  # no zarr.json: the folder of a cut-short delete, not a group
            rows.append(index_row(rel.split("/")[1], doc.get("attributes") or {}, failed))
        present = {r[0] for r in rows}
        rows += [(v, video_key(v), -1, "", 0, "failed", "") for v in sorted(failed - present)]
        rows.sort(key=lambda r: r[0])
        return rows, failures

    def iter_complete(self, split: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        index = self.index()
        for vid, key, sp, st in zip(index["video_id"], index["key"], index["split"], index["status"]):
            if st == "complete" and (split is None or sp == split):
                yield str(vid), dict(self.root["videos"][str(key)].attrs)


class VideoWriter:
    """Writes one video's arrays (optionally in time slices, for long videos), then marks it complete.

    Each array's metadata is one write, each chunk one write, and `finish` one write of the
    group's attributes with `complete` true: 4 writes (object-store PUTs) for a one-chunk video.
    """

    def __init__(self, store: FeatureStore, rel: str, attrs: dict[str, Any]):
        self.store, self.rel, self.attrs = store, rel, attrs

    @property
    def group(self):
        """The video's zarr group (opened on demand; the writes above do not need it)."""
        return self.store.root[self.rel]

    def create(self, name: str, *, shape: tuple[int, ...], dtype, dims: tuple[str, ...],
               time_axis: int, attrs: Mapping[str, Any] | None = None) -> ChunkWriter:
        frame_shape = tuple(s for i, s in enumerate(shape) if i != time_axis and dims[i] != "view")
        chunks = list(shape)
        if "view" in dims:
            chunks[dims.index("view")] = 1
        chunks[time_axis] = time_chunk(frame_shape, np.dtype(dtype).itemsize, max(1, shape[time_axis]))
        chunks = tuple(max(1, c) for c in chunks)
        array = ChunkWriter(self.store, f"{self.rel}/{name}", shape=tuple(int(s) for s in shape), chunks=chunks,
                            dtype=np.dtype(dtype), dims=tuple(dims), attrs=dict(attrs or {}))
        array.write_metadata()
        return array

    def write(self, name: str, values: np.ndarray, **create_kwargs) -> None:
        """Create array `name` holding `values` in one go."""
        array = self.create(name, shape=values.shape, dtype=values.dtype, **create_kwargs)
        if values.size:
            array[...] = values

    def finish(self, **attrs: Any) -> None:
        self.attrs = {**self.attrs, **attrs, "complete": False}
        fault_point("finish")
        # one write, last: the attributes and `complete` together; a crash before it means "redo"
        self.store.io.put(f"{self.rel}/{META}", group_document({**self.attrs, "complete": True}))


class ChunkWriter:
    """A per-video array written chunk by chunk as whole objects (what zarr would write, minus its
    per-call overhead). `array[sel] = values` takes selections aligned to chunk boundaries, as the
    extractor's time buffers and `VideoWriter.write` make; any other selection goes through zarr."""

    def __init__(self, store: FeatureStore, rel: str, *, shape, chunks, dtype, dims, attrs):
        self.store, self.rel = store, rel
        self.shape, self.chunks, self.dtype, self.dims, self.attrs = shape, chunks, dtype, dims, attrs

    def write_metadata(self) -> None:
        self.store.io.put(f"{self.rel}/{META}", array_document(shape=self.shape, chunks=self.chunks, dtype=self.dtype,
                                                              dims=self.dims, attributes=self.attrs), atomic=False)

    def resize(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.write_metadata()  # chunks past the new end are never read

    def __setitem__(self, selection, values) -> None:
        box = _aligned_box(selection, self.shape, self.chunks)
        values = np.asarray(values, dtype=self.dtype)
        if box is None:
            import zarr

            zarr.open_array(store=self.store.root.store, path=self.rel, mode="r+")[selection] = values
            return
        starts, stops = box
        values = np.broadcast_to(values, tuple(b - a for a, b in zip(starts, stops)))
        first = [a // c for a, c in zip(starts, self.chunks)]
        last = [-(-b // c) for b, c in zip(stops, self.chunks)]
        for index in np.ndindex(*[hi - lo for lo, hi in zip(first, last)]):
            chunk = tuple(lo + i for lo, i in zip(first, index))
            lo = [i * c for i, c in zip(chunk, self.chunks)]
            hi = [min(a + c, s) for a, c, s in zip(lo, self.chunks, self.shape)]
            block = values[tuple(slice(a - s0, b - s0) for a, b, s0 in zip(lo, hi, starts))]
            if block.shape != self.chunks:  # the edge of the array: zarr pads with the fill value
                full = np.zeros(self.chunks, dtype=self.dtype)
                full[tuple(slice(0, n) for n in block.shape)] = block
                block = full
            self.store.io.put(f"{self.rel}/{chunk_key(chunk, CHUNK_SEPARATOR)}", encode_chunk(block), atomic=False)


def _aligned_box(selection, shape, chunks) -> tuple[list[int], list[int]] | None:
    """(starts, stops) of a selection of whole chunks (the array's end may cut the last); else None."""
    if selection is Ellipsis:
        selection = ()
    if not isinstance(selection, tuple):
        selection = (selection,)
    if any(s is Ellipsis for s in selection):
        if sum(s is Ellipsis for s in selection) > 1:
            return None
        at = next(i for i, s in enumerate(selection) if s is Ellipsis)
        selection = selection[:at] + (slice(None),) * (len(shape) - len(selection) + 1) + selection[at + 1:]
    selection = tuple(selection) + (slice(None),) * (len(shape) - len(selection))
    if len(selection) != len(shape) or not all(isinstance(s, slice) for s in selection):
        return None
    starts, stops = [], []
    for sel, size, chunk in zip(selection, shape, chunks):
        start, stop, step = sel.indices(size)
        if step != 1 or start % chunk or (stop % chunk and stop != size) or stop <= start:
            return None
        starts.append(start)
        stops.append(stop)
    return starts, stops


INDEX_COLUMNS = ("video_id", "key", "label", "split", "num_frames", "status", "group")


def index_row(key: str, attrs: Mapping[str, Any], failed: Collection[str] = ()) -> tuple:
    """A video's row of the index from its group's attrs: (video_id, key, label, split, num_frames,
    status, group)."""
    video_id = attrs.get("video_id") or key_to_id(key) or key
    status = "complete" if attrs.get("complete") else "failed" if video_id in failed else "incomplete"
    label = attrs.get("label_index")
    return (video_id, key, -1 if label is None else int(label), attrs.get("split") or "",
            int(attrs.get("num_frames") or 0), status, attrs.get("group") or "")


def _columns(rows: list[tuple]) -> dict[str, np.ndarray]:
    return {
        "video_id": np.array([r[0] for r in rows], dtype=str),
        "key": np.array([r[1] for r in rows], dtype=str),
        "label": np.array([r[2] for r in rows], dtype=np.int64),
        "split": np.array([r[3] for r in rows], dtype=str),
        "num_frames": np.array([r[4] for r in rows], dtype=np.int64),
        "status": np.array([r[5] for r in rows], dtype=str),
        "group": np.array([r[6] for r in rows], dtype=str),
    }


def _same_columns(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return all(a[name].tolist() == b[name].tolist() for name in INDEX_COLUMNS)


def config_hash(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(jsonable(content), sort_keys=True).encode()).hexdigest()[:16]


# What turns frames into a backbone's input. The config names the backbone, but a library's
# pretrained config (timm, OpenCLIP) or a plug-in can change what the same name means between runs.
PREPROCESSING_KEYS = ("input_size", "resize_size", "mean", "std", "interpolation", "antialias")


def _check_same(url: str, meta: Mapping[str, Any], provenance: Mapping[str, Any]) -> None:
    want = provenance.get("config_hash")
    have = meta.get("config_hash")
    if want == have and provenance.get("manifest_sha256") == meta.get("manifest_sha256"):
        _check_preprocessing(url, meta, provenance)
        return
    if want != have:
        old, new = meta.get("config", {}), provenance.get("config", {})
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise StoreError(
            f"{url}: store was made by a different extract config (differs in: {', '.join(keys) or 'content'}); "
            "use another output or --overwrite"
        )
    raise StoreError(f"{url}: store was made from a different manifest; use another output or --overwrite")


def _check_preprocessing(url: str, meta: Mapping[str, Any], provenance: Mapping[str, Any]) -> None:
    pairs = [("backbone", meta.get("backbone"), provenance.get("backbone"))]
    old_flow, new_flow = meta.get("flow") or {}, provenance.get("flow") or {}
    pairs.append(("flow backbone", old_flow.get("backbone"), new_flow.get("backbone")))
    for what, old, new in pairs:
        if not old or not new:
            continue
        keys = [k for k in PREPROCESSING_KEYS if k in old and k in new and jsonable(old[k]) != jsonable(new[k])]
        if keys:
            changes = "; ".join(f"{k} {old[k]} -> {new[k]}" for k in keys)
            raise StoreError(
                f"{url}: {what} {new.get('name')} now preprocesses differently from when the store was made "
                f"({changes}); use another output or --overwrite"
            )



def summarize(store: FeatureStore) -> dict[str, Any]:
    """Counts, shapes, dtypes and bytes for `stpipe inspect`."""
    index = store.index()
    status = index["status"]
    shapes: dict[str, Any] = {}
    for vid, _ in store.iter_complete():
        group = store.video_group(vid)
        for name, array in group.arrays():
            shapes[name] = {"shape_example": list(array.shape), "dtype": str(array.dtype),
                            "dims": list(array.metadata.dimension_names or [])}
        break
    return {
        "url": store.url,
        "videos": int(len(status)),
        "complete": int((status == "complete").sum()),
        "incomplete": int((status == "incomplete").sum()),
        "failed": int((status == "failed").sum()),
        "splits": {str(s): int(((index["split"] == s) & (status == "complete")).sum()) for s in np.unique(index["split"]) if s},
        "groups": _group_summary(index),
        "arrays": shapes,
        "meta": store.meta,
        "failures": [f.__dict__ for f in store.failures()],
        "pack": _pack_states(store),
    }


def _group_summary(index: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """How many groups the complete videos have, and the groups each other split shares with train."""
    complete = index["status"] == "complete"
    splits = sorted({str(s) for s in index["split"][complete].tolist()} - {"train", ""})
    return {"count": len(set(index["group"][complete].tolist()) - {""}),
            "leaks": {split: leak for split in splits if (leak := index_leak(index, "train", split))}}


def _pack_states(store: FeatureStore) -> dict[str, str]:
    """{array: "fresh" | "stale"} of the packs present (stale: videos were added since; `stpipe pack`)."""
    from pipeline.store.pack import PACKED_ARRAYS, fingerprint, open_pack, packed_order

    keys, _ = packed_order(store.index())
    states = {}
    for name in PACKED_ARRAYS:
        found = open_pack(store, name)
        if found is not None:
            states[name] = "fresh" if found.fingerprint == fingerprint(keys) else "stale"
    return states

