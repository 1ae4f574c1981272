"""HDF5 export/import of feature stores, and import of per-video `.npy` features from other extractors.

HDF5 layout written by `export_hdf5` (and read back by `import_hdf5`):

    /                       attrs: format="stpipe-hdf5", format_version, stpipe=<root provenance as JSON>,
                            source=<store URL>, exported=<UTC time>, failures=<JSON list>
    /classes                (classes,) strings; position = label index
    /index/<column>         (videos,) video_id, key, label, split, num_frames, status: the exported
                            videos plus the store's failed ones (status "failed")
    /videos/<key>/          one group per complete video, keyed by the store's safe key;
                            attrs: video_id, label, label_index, split, num_frames, fps (plain values)
                            and stpipe=<every video attr as JSON>
       frame_index          (time,) int64 source frame numbers
       rgb, flow, flow_feat the store's arrays unchanged (dtype and shape); each dimension carries
                            its name as an HDF5 dimension label ("view", "time", "channel", ...);
                            attrs: stpipe=<the array's attrs as JSON> (e.g. the flow bound)

Imports build a store with the extract layout (`pipeline/store/feature_store.py`), so stage two reads it like an
extracted one; the root provenance records where it came from (`origin`). Imports resume: videos
already complete in the output store are skipped.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cpus import usable_cpus
from pipeline.errors import StoreError
from pipeline.processes import can_spawn, check_not_starting_a_part, run_parts
from pipeline.progress import Progress, count_units
from pipeline.store import Failure, FeatureStore, config_hash, video_key
from pipeline.store.feature_store import index_row
from pipeline.store.pack import (
    PACKED_ARRAYS,
    PackPlan,
    PackSlice,
    create_pack,
    fingerprint,
    finish_pack,
    packed_order,
    write_pack,
)
from pipeline.store.writer import Writer, write_threads

HDF5_FORMAT = "stpipe-hdf5"
HDF5_VERSION = 1
PLAIN_VIDEO_ATTRS = ("video_id", "label", "label_index", "split", "num_frames", "fps")
INDEX_COLUMNS = ("video_id", "key", "label", "split", "num_frames", "status")
FLOAT16_MAX = float(np.finfo(np.float16).max)
H5_CHUNK_BYTES = 4 * 2**20


@dataclass
class InteropResult:
    source: str
    target: str
    total: int  # videos in the source
    skipped: int  # already complete in the target (resumed import)
    done: int
    failed: int
    failures: list[Failure] = field(default_factory=list)


# ---- HDF5 export ------------------------------------------------------------------------------


def export_hdf5(store: FeatureStore, path: str | Path, *, arrays: Iterable[str] = (), overwrite: bool = False,
                compression: int = 4, progress: Progress | None = None) -> InteropResult:
    """Write the store's complete videos to `path` (written to `path.partial`, renamed at the end).

    `arrays` limits which arrays are written (default all); `compression` is the gzip level (0 = none).
    `progress`: the "export" task, a unit per video written (its id the `item`).
    """
    import h5py

    advance = count_units(progress, "export", "video")
    path = Path(path)
    if "://" in str(path):
        raise StoreError(f"{path}: export writes a local .h5 file; give a path")
    if path.exists() and not overwrite:
        raise StoreError(f"{path}: exists; pick another output or --overwrite")
    wanted = set(arrays)
    partial = path.with_name(path.name + ".partial")
    index = store.index()
    exported = []
    try:
        with h5py.File(partial, "w") as h5:
            h5.attrs.update({"format": HDF5_FORMAT, "format_version": HDF5_VERSION, "source": store.url,
                             "stpipe": _dumps(store.meta), "failures": _dumps([f.__dict__ for f in store.failures()]),
                             "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
            h5.create_dataset("classes", data=np.array(store.classes, dtype=object), dtype=h5py.string_dtype())
            videos = h5.create_group("videos")
            for video_id, attrs in store.iter_complete():
                group = videos.create_group(video_key(video_id))
                group.attrs["stpipe"] = _dumps(attrs)
                group.attrs.update({k: attrs[k] for k in PLAIN_VIDEO_ATTRS if attrs.get(k) is not None})
                group.create_dataset("frame_index", data=np.asarray(attrs.get("frame_index", []), dtype=np.int64))
                for name, array in store.video_group(video_id).arrays():
                    if not wanted or name in wanted:
                        _write_dataset(group, name, array, compression)
                exported.append(video_id)
                advance(video_id)
            written = set(exported)
            keep = np.array([s == "failed" or v in written for v, s in zip(index["video_id"].tolist(),
                                                                           index["status"].tolist())], dtype=bool)
            columns = h5.create_group("index")
            for name in INDEX_COLUMNS:
                values = index[name][keep]
                if values.dtype.kind in "UTO":
                    columns.create_dataset(name, data=np.array([str(v) for v in values], dtype=object),
                                           dtype=h5py.string_dtype())
                else:
                    columns.create_dataset(name, data=values)
        os.replace(partial, path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write HDF5 ({exc})") from None
    finally:
        partial.unlink(missing_ok=True)
    failed = int((index["status"] == "failed").sum())
    return InteropResult(store.url, str(path), len(index["status"]), 0, len(exported), failed, store.failures())


def _write_dataset(group, name: str, array, compression: int) -> None:
    data = array[...]
    options = {}
    if compression and data.size:
        # one chunk per array where it is small (a pooled video's): importing reads it with one
        # decompression instead of one per tile of h5py's own chunking (~4x faster per video)
        chunks = data.shape if data.nbytes <= H5_CHUNK_BYTES else True
        options = {"compression": "gzip", "compression_opts": compression, "shuffle": True, "chunks": chunks}
    dataset = group.create_dataset(name, data=data, **options)
    for axis, dim in enumerate(array.metadata.dimension_names or ()):
        dataset.dims[axis].label = dim or ""
    dataset.attrs["stpipe"] = _dumps(dict(array.attrs))


# ---- HDF5 import ------------------------------------------------------------------------------


def import_hdf5(path: str | Path, url: str, *, storage_options: dict[str, Any] | None = None,
                overwrite: bool = False, progress: Progress | None = None) -> InteropResult:
    """Build the store at `url` from an `export_hdf5` file.

    One pass: videos are read and written in pack order (the file's /index gives it), each checked
    against the first as it is read; an import into an empty store builds the packs from the arrays
    in hand (`pipeline.store.pack.PackSlice`) instead of reading them back. Above
    VIDEOS_PER_PROCESS videos a process per usable CPU takes a contiguous part of that order.
    `progress`: the "import" task, a unit per video stored (its id the `item`).
    """
    import h5py

    check_not_starting_a_part()
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot read HDF5 ({_first_line(exc)})") from None
    with h5:
        if h5.attrs.get("format") != HDF5_FORMAT or "videos" not in h5:
            raise StoreError(f"{path}: not an stpipe HDF5 export (root attr format={HDF5_FORMAT!r} and "
                             "/videos expected); per-video .npy features import from a folder instead")
        meta = json.loads(h5.attrs["stpipe"])
        for stale in ("created", "version"):  # the new store gets its own
            meta.pop(stale, None)
        meta["origin"] = f"imported from {path.absolute()} (stpipe HDF5 export of {h5.attrs.get('source', '?')})"
        order, plan = _h5_order(h5)
        first, shapes = _first_arrays(path, h5, order)
        failures = json.loads(h5.attrs.get("failures", "[]"))
    store = FeatureStore.create(url, provenance=meta, overwrite=overwrite, storage_options=storage_options)
    done = store.complete_ids()
    store.invalidate_index()  # renewed at the end; a kill in between leaves no index that hides videos
    packs = _pack_plans(plan, first, shapes) if plan is not None and order and not done else {}
    for pack in packs.values():
        create_pack(store, pack)
    parts = max(1, min(int(usable_cpus()), len(order) // VIDEOS_PER_PROCESS)) if can_spawn() else 1
    bounds = [len(order) * i // parts for i in range(parts + 1)]
    jobs = [_ImportPart(str(path), url, storage_options, order, bounds[i], bounds[i + 1], done, first, packs)
            for i in range(parts)]
    result = InteropResult(str(path), url, len(order), 0, 0, 0)

    advance = count_units(progress, "import", "video")

    def written(video_ids: list[str]) -> None:
        result.done += len(video_ids)
        for video_id in video_ids:
            advance(video_id)

    outcomes = [_import_part(jobs[0], written)] if parts == 1 else run_parts(_import_part, jobs, written)
    result.skipped = sum(o.skipped for o in outcomes)
    rows = [row for o in outcomes for row in o.rows]  # the index needs no document read back
    present = done | {row[0] for row in rows}
    for failure in failures:
        if failure["video_id"] not in present:
            store.record_failure(Failure(**failure))
            result.failed += 1
    index = store.write_index(rows)
    keys, _ = packed_order(index)
    for name, pack in packs.items():
        pieces = [o.packs.get(name) for o in outcomes]
        if np.array_equal(keys, pack.keys) and all(p is not None for p in pieces):
            finish_pack(store, pack, pieces, fingerprint(keys))
    write_pack(store)  # what the packs made as it wrote did not cover (or a resumed import's whole set)
    result.failures = store.failures()
    return result


VIDEOS_PER_PROCESS = 1000  # below this a process's start-up (~1 s) costs more than it saves


@dataclass
class _ImportPart:
    """Videos order[first:stop] of an HDF5 import, for one process (plain values: pickled)."""

    path: str
    url: str
    storage_options: dict[str, Any] | None
    order: list[str]
    first: int
    stop: int
    done: set[str]
    reference: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]  # the first video's arrays
    packs: dict[str, PackPlan]


@dataclass
class _PartOutcome:
    skipped: int
    rows: list[tuple]  # `index_row` of each video written
    packs: dict[str, tuple | None]  # PackSlice.close() of each pack, None where its videos did not fit it


def _import_part(job: _ImportPart, report: Callable[[list[str]], None]) -> _PartOutcome:
    import h5py

    path = Path(job.path)
    store = FeatureStore.open(job.url, mode="r+", storage_options=job.storage_options)
    checker = _ShapeCheck(path)
    checker.first.update(job.reference)
    slices = {name: PackSlice(store, plan, job.first, job.stop) for name, plan in job.packs.items()}
    batch: list[str] = []
    rows: list[tuple] = []
    skipped = 0

    def written(video_id: str) -> None:
        batch.append(video_id)
        if len(batch) >= 64:
            report(batch[:])
            batch.clear()

    with h5py.File(path, "r") as h5, Writer(write_threads(store, inline_local=True), on_done=written, in_flight=2) as pool:
        for row in range(job.first, job.stop):
            key = job.order[row]
            attrs, arrays = _h5_video(path, h5, key, skip=job.done)
            video_id = attrs["video_id"]
            if arrays is None:
                skipped += 1
                continue
            for name, values, dims, _ in arrays:
                checker.check(f"{path}:/videos/{key}/{name}", name, values.shape, dims)
            video_attrs = {k: v for k, v in attrs.items() if k not in ("video_id", "complete")}
            pool.submit(_write_video, store, video_id, video_attrs, arrays, {})
            rows.append(index_row(key, {**video_attrs, "video_id": video_id, "complete": True}))
            values = {name: v for name, v, _, _ in arrays}
            for name, part in slices.items():
                try:
                    if part is not None:
                        part.add(row, values[name])
                except (KeyError, StoreError):  # this video does not fit the plan: write_pack packs it after
                    slices[name] = None
    report(batch)
    return _PartOutcome(skipped, rows, {name: part.close() if part is not None else None for name, part in slices.items()})


def _first_arrays(path: Path, h5, order: list[str]) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The first video's arrays as `_ShapeCheck` records them (every other video is checked against
    them), and their shapes."""
    checker, shapes = _ShapeCheck(path), {}
    for name, values, dims, _ in _h5_video(path, h5, order[0])[1] if order else ():
        checker.check(f"{path}:/videos/{order[0]}/{name}", name, values.shape, dims)
        shapes[name] = values.shape
    return dict(checker.first), shapes


def _pack_plans(plan: tuple[np.ndarray, np.ndarray, np.ndarray], reference: dict,
                shapes: dict[str, tuple[int, ...]]) -> dict[str, PackPlan]:
    """A PackPlan per packed array that has the pack's axes; time lengths from /index's num_frames
    plus the first video's difference (flow features have one step fewer than frames)."""
    keys, splits, num_frames = plan
    out = {}
    for name, (_, dims, _) in reference.items():
        if name in PACKED_ARRAYS and dims in (("view", "time", "channel"), ("view", "time", "channel", "y", "x")):
            lengths = num_frames + (shapes[name][1] - int(num_frames[0]))
            out[name] = PackPlan.of(name, keys, splits, lengths, shapes[name])
    return out


def _h5_order(h5) -> tuple[list[str], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """The video groups in pack order and the plan (keys, splits, num_frames) when the file's /index
    lists exactly its groups as complete; else the groups in file order and no plan."""
    names = list(h5["videos"].keys())
    if "index" not in h5 or any(c not in h5["index"] for c in INDEX_COLUMNS):
        return names, None
    columns = {c: h5["index"][c] for c in INDEX_COLUMNS}
    index = {c: np.asarray(d.asstr()[...] if d.dtype.kind in "OS" else d[...]) for c, d in columns.items()}
    keys, splits = packed_order(index)
    if sorted(keys.tolist()) != sorted(names):
        return names, None
    frames = dict(zip(index["key"].tolist(), index["num_frames"].tolist()))
    return keys.tolist(), (keys, splits, np.array([frames[k] for k in keys.tolist()], dtype=np.int64))


def _h5_video(path: Path, h5, key: str, *, skip: Collection[str] = ()) -> tuple[dict[str, Any], list | None]:
    """One exported video: its attrs and [(array name, values, dims, array attrs)] (None when its id
    is in `skip`). Through h5py's low-level API: for a 40 kB array the high-level objects, selections
    and attribute managers cost several times the read itself."""
    import h5py

    group = h5py.h5o.open(h5.id, f"videos/{key}".encode())
    attrs = json.loads(_h5_attr(group, b"stpipe") or "{}")
    video_id = attrs.get("video_id")
    if not video_id or video_key(video_id) != key:
        raise StoreError(f"{path}:/videos/{key}: video_id attr {video_id!r} does not match the group key")
    if video_id in skip:
        return attrs, None
    arrays = []
    for raw in group:
        name = raw.decode()
        if name == "frame_index":
            continue
        dataset = h5py.h5o.open(group, raw)
        labels = _h5_attr(dataset, b"DIMENSION_LABELS")
        dims = tuple(x.decode() if isinstance(x, bytes) else str(x) for x in (() if labels is None else labels))
        if "time" not in dims or not all(dims) or len(dims) != len(dataset.shape):
            raise StoreError(f"{path}:/videos/{key}/{name}: dimension labels {list(dims)} must name every axis "
                             "and include 'time'")
        arrays.append((name, _h5_values(dataset), dims, json.loads(_h5_attr(dataset, b"stpipe") or "{}")))
    return attrs, arrays


def _h5_values(dataset) -> np.ndarray:
    """A dataset's values. One deflated chunk holding the whole array (what `export_hdf5` writes for a
    pooled video) is inflated and unshuffled here: HDF5's filter pipeline costs ~3x as much for 40 kB,
    and isal (when installed) inflates ~2x faster than zlib. Any other layout goes through HDF5."""
    import h5py

    values = np.empty(dataset.shape, dtype=dataset.dtype)
    if not values.size:
        return values
    plist = dataset.get_create_plist()
    filters = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
    shuffled = filters == (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE)
    if (plist.get_layout() != h5py.h5d.CHUNKED or plist.get_chunk() != values.shape
            or not (shuffled or filters == (h5py.h5z.FILTER_DEFLATE,)) or values.dtype.byteorder == ">"
            or values.dtype.kind not in "biuf" or values.itemsize not in (1, 2, 4, 8)):
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, values)
        return values
    mask, data = dataset.read_direct_chunk((0,) * values.ndim)
    raw = np.frombuffer(_inflate(data), dtype=np.uint8)  # zlib's adler32 checks the bytes
    if mask or raw.size != values.nbytes:
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, values)  # a filter was skipped for this chunk: HDF5 knows
        return values
    if not shuffled or values.itemsize == 1:
        values.reshape(-1).view(np.uint8)[...] = raw
        return values
    # shuffled: byte k of every element stored together; whole-array shifts are ~9x a strided copy
    words = values.reshape(-1).view(f"<u{values.itemsize}")
    words[...] = 0
    for k, plane in enumerate(raw.reshape(values.itemsize, -1)):
        words |= plane.astype(words.dtype) << (8 * k)
    return values


def _inflate(data: bytes) -> bytes:
    try:
        from isal.isal_zlib import decompress
    except ImportError:
        from zlib import decompress
    return decompress(data)


def _h5_attr(node, name: bytes):
    """An attribute's value (bytes for a string, an array for a list), None when absent."""
    import h5py

    try:
        attr = h5py.h5a.open(node, name)
    except KeyError:
        return None
    value = np.empty(attr.shape, dtype=attr.dtype)
    attr.read(value)
    return value[()] if value.shape == () else value


# ---- .npy import ------------------------------------------------------------------------------


def import_npy(manifest_path: str | Path, url: str, *, features_dir: str | Path | None = None,
               flow_dir: str | Path | None = None, name_template: str = "{video_id}.npy", root: str | None = None,
               backbone: str = "imported", storage_options: dict[str, Any] | None = None,
               overwrite: bool = False, progress: Progress | None = None) -> InteropResult:
    """Build a store from one `.npy` per video: (T, D) vectors or (T, C, H, W) maps.

    Files are `features_dir / name_template.format(video_id=...)`, or the manifest's own paths when
    no folder is given; `flow_dir` adds flow-stream features (`flow_feat`) named the same way.
    Labels and splits come from the manifest. Every present file is checked (shape, dtype) before
    anything is written; a manifest entry without a file is recorded as a failure. `progress`: the
    "import" task, a unit per video stored or failed (its id the `item`).
    """
    from manifests.table import read_manifest

    manifest = read_manifest(manifest_path, root=root)
    streams = {"rgb": features_dir, **({"flow_feat": flow_dir} if flow_dir else {})}

    def file_of(entry, folder) -> Path:
        if folder is None:
            return manifest.resolve(entry)
        return Path(folder) / name_template.format(video_id=entry.video_id)

    checker = _ShapeCheck(Path(manifest_path))
    files: dict[str, dict[str, Path]] = {}
    missing: dict[str, Path] = {}
    for entry in manifest.entries:
        found = {name: file_of(entry, folder) for name, folder in streams.items()}
        absent = [f for f in found.values() if not f.is_file()]
        if absent:
            missing[entry.video_id] = absent[0]
            continue
        for name, file in found.items():
            checker.check(str(file), name, *_npy_header(file))
        files[entry.video_id] = found
    if not files:
        where = next(iter(missing.values()), Path(str(features_dir)))
        raise StoreError(f"no feature files found for any of the {len(manifest)} manifest entries "
                         f"(first looked for {where})")
    shapes = {name: list(shape) for name, shape in checker.frame_shapes.items()}
    content = {"source": "npy", "backbone": backbone, "frame_shapes": shapes, "dtype": "float16"}
    origin = Path(features_dir).absolute() if features_dir else Path(manifest_path).absolute()
    provenance = {
        "config": {**content, "features_dir": str(features_dir or ""), "flow_dir": str(flow_dir or ""),
                   "name_template": name_template},
        "content": content,
        "config_hash": config_hash(content),
        "manifest_sha256": manifest.sha256(),
        "manifest": str(Path(manifest_path).absolute()),
        "classes": list(manifest.classes),
        "backbone": _imported_meta(backbone, shapes["rgb"], "rgb"),
        # no optical flow, only flow-stream features (keys as an extraction's flow meta)
        "flow": {"method": "imported", "params": {}, "bound": None, "quantisation": "none",
                 "backbone": _imported_meta(backbone, shapes["flow_feat"], "flow")} if "flow_feat" in shapes else None,
        "views": "center",
        "origin": f"imported from {origin} (per-video .npy)",
    }
    store = FeatureStore.create(url, provenance=provenance, overwrite=overwrite, storage_options=storage_options)
    done = store.complete_ids()
    store.invalidate_index()  # renewed at the end; a kill in between leaves no index that hides videos
    result = InteropResult(str(origin), url, len(manifest), 0, 0, 0)
    advance = count_units(progress, "import", "video")

    def written(video_id: str) -> None:
        result.done += 1
        advance(video_id)

    with Writer(write_threads(store, inline_local=True), on_done=written, in_flight=2) as pool:
        for entry in manifest.entries:
            if entry.video_id in done:
                result.skipped += 1
                continue
            if entry.video_id in missing:
                _fail(store, result, entry.video_id, missing[entry.video_id], f"missing features file {missing[entry.video_id]}")
            else:
                job = _npy_video(store, result, manifest, entry, files[entry.video_id])
                if job is not None:
                    pool.submit(_write_video, store, *job)
                    continue
            advance(entry.video_id)
    store.write_index()
    write_pack(store)
    result.failures = store.failures()
    return result


def _npy_video(store: FeatureStore, result: InteropResult, manifest, entry, files: dict[str, Path]):
    """(video_id, attrs, arrays, finish attrs) of one video's checked features; None when it failed."""
    arrays = []
    for name, file in files.items():
        values = np.load(file, allow_pickle=False)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return _fail(store, result, entry.video_id, file, f"{file}: NaN or infinite values")
        if np.abs(values).max(initial=0) > FLOAT16_MAX:
            return _fail(store, result, entry.video_id, file, f"{file}: values beyond the float16 range (+-{FLOAT16_MAX:g})")
        values = values.astype(np.float16)[None]  # one view
        arrays.append((name, values, ("view", "time", "channel", "y", "x")[: values.ndim], None))
    length = arrays[0][1].shape[1]
    attrs = {"path": str(manifest.resolve(entry)), "label": entry.label,
             "label_index": manifest.label_index(entry.label) if entry.label is not None else -1,
             "split": entry.split, "group": entry.group, "start": entry.start, "end": entry.end, "fps": None,
             "features_files": {name: str(file) for name, file in files.items()}}
    # source frame numbers are unknown: time steps of the imported sequence
    return entry.video_id, attrs, arrays, {"num_frames": length, "frame_index": list(range(length))}


def _write_video(store: FeatureStore, video_id: str, attrs: dict[str, Any], arrays: list, finish: dict[str, Any]) -> str:
    """One video's writes, in order, by one writer (a `Writer` task)."""
    writer = store.begin_video(video_id, attrs, announce=False)  # every array is in hand: one group write, last
    for name, values, dims, array_attrs in arrays:
        writer.write(name, values, dims=dims, time_axis=dims.index("time"), attrs=array_attrs)
    writer.finish(**finish)
    store.clear_failure(video_id)
    return video_id


def _fail(store: FeatureStore, result: InteropResult, video_id: str, file: Path, error: str) -> None:
    store.discard_video(video_id)
    store.record_failure(Failure(video_id, str(file), "import", error, 1))
    result.failed += 1


def _npy_header(file: Path) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Shape and dims of a `.npy` file from its header alone (memory-mapped, nothing read)."""
    try:
        values = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{file}: cannot read as .npy ({_first_line(exc)})") from None
    if values.ndim not in (2, 4):
        raise StoreError(f"{file}: features of shape {values.shape}; expected (T, D) vectors or (T, C, H, W) maps")
    if values.dtype.kind not in "fiu" or values.shape[0] < 1:
        raise StoreError(f"{file}: need at least one time step of numbers, got {values.dtype} {values.shape}")
    return (1, *values.shape), ("view", "time", "channel", "y", "x")[: values.ndim + 1]


def _imported_meta(name: str, frame_shape: list[int], modality: str) -> dict[str, Any]:
    spatial = len(frame_shape) == 3
    return {"name": name, "source": "imported", "modality": modality, "features": "spatial" if spatial else "pooled",
            "dim": frame_shape[0], "pooled_dim": frame_shape[0], "feature_shape": frame_shape,
            "spatial_size": frame_shape[1:] if spatial else None}


class _ShapeCheck:
    """Every video's array of one name must share dims and per-frame shape (all but view and time)."""

    def __init__(self, source: Path):
        self.source = source
        self.first: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {}

    def check(self, where: str, name: str, shape: tuple[int, ...], dims: tuple[str, ...]) -> None:
        if len(dims) != len(shape):
            raise StoreError(f"{where}: {len(shape)} axes but {len(dims)} dimension names")
        frame = tuple(s for s, d in zip(shape, dims) if d not in ("view", "time"))
        if name not in self.first:
            self.first[name] = (where, dims, frame)
            return
        first, first_dims, first_frame = self.first[name]
        if dims != first_dims:
            raise StoreError(f"{where}: {name} has dims {list(dims)}, but {first} has {list(first_dims)}; "
                             "every video needs the same")
        if frame != first_frame:
            raise StoreError(f"{where}: {name} has per-frame shape {frame}, but {first} has {first_frame}; "
                             "every video needs the same")

    @property
    def frame_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: frame for name, (_, _, frame) in self.first.items()}


def _dumps(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
