"""The store's hot paths without zarr's per-call machinery: whole objects put, listed and read.

Why: through zarr's synchronous API a 10-frame pooled video cost ~10 ms to write (each call hops to
zarr's event-loop thread, and group attributes were rewritten once per key) and ~1 ms to look at on
resume; at 220k videos that is hours. The documents written here are zarr's own: group and array
metadata come from templates that zarr itself generated (`_array_template`), and chunks are encoded
by the same numcodecs Blosc codec zarr's `BloscCodec` wraps, followed by the crc32c zarr's
`Crc32cCodec` appends (`checksummed`), so zarr, xarray and dask read the store as before
(tests/test_store_scale.py compares the bytes with what zarr writes).

`StoreIO` puts whole objects: on a local disk through a temp file named like zarr's own
(`<name>.<32 hex>.partial`, swept by `FeatureStore.remove_debris`) and an atomic rename, on object
stores with one PUT each (object stores write whole objects). Reads of many small documents (the
resume scan) go out concurrently on object stores (`cat` of a batch). On object stores an error that
is left after the filesystem's retries (a 403, a deleted bucket, an outage past the retry budget;
urls.RUN_OPTIONS) is raised as one StoreError line, never read as a missing object: a missing
chunk would read as zeros.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.errors import DamagedDataError, StoreError
from pipeline.store.urls import explain, is_local, local_path

META = "zarr.json"
_SAFE = re.compile(r"[A-Za-z0-9_-]")
_MAX_KEY = 160  # well under the 255-byte file-name limit of common filesystems
READ_BATCH = 512  # documents per concurrent read on object stores


# ---- keys, documents and codecs of the store layout (pipeline.store re-exports the keys) ------------


def video_key(video_id: str) -> str:
    """Filesystem- and URL-safe key: `[A-Za-z0-9_-]` kept, every other byte as `~hh`.

    No key contains `/`, `.` or starts with `__`, so `../x` or `a/b` stay inside `videos/`.
    Ids whose encoding is too long keep a prefix plus a sha256 suffix (the id lives in attrs).
    """
    if not video_id:
        raise StoreError("empty video id")
    out = []
    for char in video_id:
        if _SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"~{b:02x}" for b in char.encode("utf-8"))
    key = "".join(out)
    if key.startswith("__"):
        key = "~5f" + key[1:]
    if len(key) > _MAX_KEY:
        digest = hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:32]
        key = f"{key[: _MAX_KEY - 36]}~~~{digest}"
    return key


def key_to_id(key: str) -> str | None:
    """Inverse of `video_key` (None for hashed long keys; read the id from attrs then)."""
    if "~~~" in key:
        return None
    return re.sub(rb"~([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), key.encode()).decode("utf-8")


def feature_compressor():
    """The codec of the per-video feature arrays (before their checksum, `checksummed`)."""
    from zarr.codecs import BloscCodec

    # zstd level 1: on float16 spatial maps (125 KB a frame) level 3 cost 2.1 ms of CPU per frame,
    # level 1 0.9 ms, for about the same size; on a CPU-only host that time comes off the backbone
    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


def jsonable(value: Any) -> Any:
    """Plain JSON values (numpy arrays and scalars as lists and numbers, non-finite floats as null)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

class StoreIO:
    """Whole-object access below a store's root (`rel` paths use `/`)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None):
        self.url = url
        self.local = is_local(url)
        self._options = dict(storage_options or {})
        self._fs = None
        self._lock = threading.Lock()
        if self.local:
            self.root = os.path.abspath(local_path(url))
        else:
            self.root = None

    # ---- object stores: one filesystem per StoreIO, made on first use -----------------------

    @property
    def fs(self):
        if self._fs is None:
            with self._lock:
                if self._fs is None:
                    import fsspec

                    self._fs, self._base = fsspec.url_to_fs(self.url, **self._options)
                    self._base = self._base.rstrip("/")
        return self._fs

    def _remote(self, rel: str) -> str:
        self.fs  # noqa: B018 - sets _base
        return f"{self._base}/{rel}" if rel else self._base

    # ---- writes -------------------------------------------------------------------------------

    def put(self, rel: str, data: bytes, *, atomic: bool = True) -> None:
        """Write a whole object. `atomic=False` (local disks): written in place, for documents whose
        torn remains a re-run discards anyway (chunks and arrays of a group not yet complete)."""
        if self.local:
            path = os.path.join(self.root, rel)
            target = f"{path}.{uuid.uuid4().hex}.partial" if atomic else path
            try:
                fd = os.open(target, _CREATE, 0o666)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(target, _CREATE, 0o666)
            try:
                try:  # a file object would add 3 system calls (fstat, isatty, lseek) to the 3 a write needs
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                if atomic:
                    os.replace(target, path)  # readers see the old document or the new, never half
            except OSError:  # a full disk: give back what the torn copy took (no complete group holds it)
                with contextlib.suppress(OSError):
                    os.unlink(target)
                raise
        else:
            try:
                self.fs.pipe_file(self._remote(rel), data)
            except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and s3fs raise their own types
                raise self._failed(exc) from None

    def delete_tree(self, rel: str, *, known_absent: bool = False) -> None:
        """Remove everything under `rel` (nothing to do when absent)."""
        if known_absent:
            return
        if self.local:
            path = os.path.join(self.root, rel)
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
            return
        try:
            paths = self.fs.find(self._remote(rel))  # one LIST per 1,000 objects
            if paths:
                self.fs.rm(paths)
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc) from None

    # ---- reads --------------------------------------------------------------------------------

    def list_dirs(self, rel: str) -> list[str]:
        """Names of the child folders (prefixes) of `rel`; [] when it does not exist."""
        if self.local:
            try:
                with os.scandir(os.path.join(self.root, rel)) as entries:
                    return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                return []
        try:
            listed = self.fs.ls(self._remote(rel), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc) from None
        return [str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in listed if e.get("type") == "directory"]

    def mtime_ns(self, rel: str) -> int:
        """Local only: modification time of a file (newer than anything when missing)."""
        try:
            return os.stat(os.path.join(self.root, rel)).st_mtime_ns
        except OSError:
            return 2**63

    def read_json(self, rels: Iterable[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """(rel, document) for each path, None where it is missing or unreadable (a kill mid-write)."""
        if self.local:
            for rel in rels:
                try:
                    with open(os.path.join(self.root, rel), "rb") as f:
                        yield rel, json.loads(f.read())
                except (OSError, ValueError):
                    yield rel, None
            return
        batch: list[str] = []
        for rel in rels:
            batch.append(rel)
            if len(batch) >= READ_BATCH:
                yield from self._cat_json(batch)
                batch = []
        if batch:
            yield from self._cat_json(batch)

    def read_bytes(self, rels: list[str]) -> dict[str, bytes]:
        """{rel: bytes} of the objects that exist (object stores: one concurrent batch)."""
        out: dict[str, bytes] = {}
        if self.local:
            for rel in rels:
                try:
                    with open(os.path.join(self.root, rel), "rb") as f:
                        out[rel] = f.read()
                except FileNotFoundError:
                    pass
            return out
        found = self._cat(rels) if rels else {}
        return {rel: data for rel, data in found.items() if data is not None}

    def _cat(self, rels: list[str]) -> dict[str, bytes | None]:
        """{rel: bytes, or None when the object does not exist}, fetched concurrently."""
        paths = [self._remote(rel) for rel in rels]
        try:
            found = self.fs.cat(paths, on_error="return")
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc) from None
        out: dict[str, bytes | None] = {}
        for rel, path in zip(rels, paths):
            data = found.get(path)
            if isinstance(data, Exception) and not isinstance(data, FileNotFoundError):
                raise self._failed(data)
            out[rel] = bytes(data) if isinstance(data, (bytes, bytearray)) else None
        return out

    def _cat_json(self, rels: list[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        for rel, data in self._cat(rels).items():
            try:
                yield rel, json.loads(data) if data is not None else None
            except ValueError:
                yield rel, None

    def _failed(self, exc: BaseException) -> StoreError:
        return StoreError(f"{self.url}: {explain(exc)}")


# ---- zarr documents ---------------------------------------------------------------------------


def group_document(attributes: Mapping[str, Any]) -> bytes:
    doc = dict(_group_template())
    doc["attributes"] = attributes
    return _dumps(doc)


def _dumps(doc: dict[str, Any]) -> bytes:
    try:
        return json.dumps(doc, allow_nan=False).encode()
    except (TypeError, ValueError):  # numpy values, NaN: the slow, careful conversion
        return json.dumps(jsonable(doc), allow_nan=False).encode()


@lru_cache(maxsize=1)
def _group_template() -> dict[str, Any]:
    import zarr

    store = zarr.storage.MemoryStore()
    zarr.open_group(store=store, mode="w")
    return _document(store, META)


def array_document(*, shape: tuple[int, ...], chunks: tuple[int, ...], dtype, dims: tuple[str, ...],
                   attributes: Mapping[str, Any] | None) -> bytes:
    doc = dict(_array_template(np.dtype(dtype).str, len(shape)))  # shallow: the parts below are replaced
    doc["shape"] = [int(s) for s in shape]
    doc["chunk_grid"] = {**doc["chunk_grid"], "configuration": {"chunk_shape": [int(c) for c in chunks]}}
    doc["dimension_names"] = list(dims)
    doc["attributes"] = dict(attributes or {})
    return _dumps(doc)


@lru_cache(maxsize=16)
def _array_template(dtype: str, ndim: int) -> dict[str, Any]:
    """The metadata zarr writes for a per-video array of this dtype and rank (store.py's settings)."""
    import zarr

    store = zarr.storage.MemoryStore()
    zarr.create_array(store, shape=(1,) * ndim, chunks=(1,) * ndim, dtype=np.dtype(dtype),
                      compressors=checksummed(feature_compressor()),
                      chunk_key_encoding={"name": "default", "separator": CHUNK_SEPARATOR},
                      dimension_names=tuple(f"d{i}" for i in range(ndim)), fill_value=0)
    return _document(store, META)


def _document(store, key: str) -> dict[str, Any]:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buffer = sync(store.get(key, prototype=default_buffer_prototype()))
    return json.loads(buffer.to_bytes())


def checksummed(compressor=None, *, compress: bool = True) -> tuple:
    """The bytes-to-bytes codecs of an array stpipe writes: `compressor` (zarr's default zstd when None;
    none at all when not `compress`), then a crc32c of its output, so a chunk damaged at rest fails its
    read (`DamagedDataError`) instead of decoding to wrong numbers. Stores written before carry no
    checksum and read as before."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    first = (compressor if compressor is not None else ZstdCodec(level=0),) if compress else ()
    return (*first, Crc32cCodec())


# per-video arrays name their chunks "c.0.0.0" (zarr v3's default encoding with the "." separator):
# one file beside the array's zarr.json instead of three nested folders more per video, and folders
# are most of what creating a video costs on a local disk (ext4: a mkdir ~0.1 ms of kernel time)
CHUNK_SEPARATOR = "."


def chunk_key(index: tuple[int, ...], separator: str = "/") -> str:
    """zarr v3's default chunk key encoding."""
    return f"c{separator}" + separator.join(str(i) for i in index)


def chunk_separator(doc: Mapping[str, Any]) -> str:
    """The separator of an array document's default chunk key encoding."""
    return doc.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/")


@lru_cache(maxsize=16)
def _codec(itemsize: int):
    from numcodecs.blosc import Blosc

    # what zarr's BloscCodec(cname="zstd", clevel=1, shuffle="shuffle") hands numcodecs (typesize from the dtype)
    return Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE, blocksize=0, typesize=itemsize)


def encode_chunk(values: np.ndarray) -> bytes:
    """A chunk as zarr writes it with the codecs bytes, blosc (`_codec`), crc32c (`checksummed`)."""
    values = np.ascontiguousarray(values)
    if values.dtype.byteorder == ">":
        values = values.astype(values.dtype.newbyteorder("<"))
    compressed = bytes(_codec(values.dtype.itemsize).encode(values))
    return compressed + crc32c(compressed)


def crc32c(data) -> bytes:
    import google_crc32c  # zarr's Crc32cCodec uses it

    return int(google_crc32c.value(data)).to_bytes(4, "little")


def chunk_damage(data: bytes, doc: dict[str, Any]) -> str:
    """Why a stored chunk of the array `doc` is damaged ("" when it is whole): its crc32c when it has
    one; otherwise (stores written before checksums) whether blosc can decode it."""
    codecs = [c.get("name") for c in doc.get("codecs", [])]
    if codecs and codecs[-1] == "crc32c":
        if len(data) < 4 or crc32c(bytes(data[:-4])) != bytes(data[-4:]):
            return "checksum mismatch"
        return ""
    if "blosc" in codecs:
        from numcodecs.blosc import Blosc

        try:
            Blosc().decode(data)
        except Exception as exc:  # noqa: BLE001 - blosc raises RuntimeError or ValueError
            return f"does not decode ({exc})"
    return ""


def is_damage(exc: BaseException) -> bool:
    """A read error of a damaged chunk: zarr's crc32c check, or a decompressor refusing the bytes."""
    text = str(exc).lower()
    return isinstance(exc, (ValueError, RuntimeError)) and ("checksum" in text or "decompress" in text)


def damage_reason(text: str) -> str:
    # zarr's Crc32cCodec says "Stored and computed checksum do not match. Stored: <bytes> ..."
    return "checksum mismatch" if "checksum do not match" in text else (text.splitlines() or ["?"])[0][:200]


def damaged(url: str, rel: str, what: str) -> DamagedDataError:
    """The one-line error of a damaged array `rel` ("videos/<key>/<array>" names the video and array)
    of the store at `url` ("": not known where it is raised)."""
    parts = rel.strip("/").split("/")
    where = f"video {key_to_id(parts[1]) or parts[1]!r}, array {parts[2]!r}" if parts[0] == "videos" and len(parts) > 2 else rel
    return DamagedDataError(f"{url + ': ' if url else ''}{where}: damaged data ({damage_reason(what)}); "
                            f"`stpipe verify --repair {url or 'STORE'}` marks it for redo")


# ---- whole arrays read back (the pack's builder, stage two's fallback) ---------------------------


def decode_chunk(data: bytes, dtype: np.dtype, shape: tuple[int, ...], *, checksum: bool = False) -> np.ndarray:
    """A chunk of a `_plain` array; `checksum`: it ends in a crc32c (checked by the caller, `chunk_damage`)."""
    from numcodecs.blosc import Blosc

    if checksum:
        data = memoryview(data)[:-4]
    return np.frombuffer(Blosc().decode(data), dtype=dtype.newbyteorder("<")).reshape(shape)


def _plain(doc: dict[str, Any] | None) -> bool:
    """An array as `VideoWriter` writes it (bytes + blosc [+ crc32c], regular grid, default keys): decoded here."""
    if not doc or doc.get("node_type") != "array":
        return False
    codecs = [c.get("name") for c in doc.get("codecs", [])]
    encoding = doc.get("chunk_key_encoding", {})
    return (codecs in (["bytes", "blosc"], ["bytes", "blosc", "crc32c"])
            and doc["codecs"][0].get("configuration", {}).get("endian", "little") == "little"
            and encoding.get("name") == "default" and chunk_separator(doc) in ("/", ".")
            and doc.get("chunk_grid", {}).get("name") == "regular" and isinstance(doc.get("data_type"), str))


def read_arrays(store, rels: list[str], *, batch: int = 256) -> Iterator[np.ndarray]:
    """Each array's whole contents, in order; object stores fetch a batch's documents and chunks
    concurrently (two rounds of requests per batch). Arrays of another layout go through zarr."""
    import zarr

    io = store.io
    for lo in range(0, len(rels), batch):
        part = rels[lo:lo + batch]
        docs = dict(io.read_json(f"{rel}/{META}" for rel in part))
        plans = []
        for rel in part:
            doc = docs.get(f"{rel}/{META}")
            if not _plain(doc):
                plans.append((rel, None, []))
                continue
            shape = tuple(doc["shape"])
            chunks = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
            grid = [-(-s // c) for s, c in zip(shape, chunks)]
            plans.append((rel, doc, [(idx, chunk_key(idx, chunk_separator(doc))) for idx in np.ndindex(*grid)]))
        blobs = io.read_bytes([f"{rel}/{key}" for rel, doc, chunks in plans if doc for _, key in chunks])
        for rel, doc, idxs in plans:
            if doc is None:
                try:
                    values = zarr.open_array(store=store.root.store, path=rel, mode="r")[...]
                except (ValueError, RuntimeError) as exc:
                    if not is_damage(exc):
                        raise
                    raise damaged(store.url, rel, str(exc)) from None
                yield values
                continue
            dtype = np.dtype(doc["data_type"])
            shape = tuple(doc["shape"])
            chunks = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
            out = np.full(shape, doc.get("fill_value") or 0, dtype=dtype)
            for idx, key in idxs:
                data = blobs.get(f"{rel}/{key}")
                if data is None:
                    continue  # never written: the fill value
                damage = chunk_damage(data, doc)
                if damage:
                    raise damaged(store.url, rel, f"chunk {key}: {damage}")
                block = decode_chunk(data, dtype, chunks, checksum=doc["codecs"][-1]["name"] == "crc32c")
                at = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape))
                out[at] = block[tuple(slice(0, a.stop - a.start) for a in at)]
            yield out
