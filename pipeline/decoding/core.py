"""One video decoded for the backbone: the frames it selects, at the backbone's resize, cut into views.

The resize happens in FFmpeg's scaler (PIL for frame folders) while the frame is converted to RGB:
frames come out of the decoder already at the size torchvision's `Resize` would give them, so the
only per-pixel work left in Python is numpy slicing of the crops into the output buffer (views
are uint8 `(V, n, 3, crop, crop)`; normalising waits for the device).

`decode_video` yields typed records, in order: `Opened` (just before the first frames), `Frames`
(a chunk: crops, source ordinals and, when flow runs here, the chunk's TV-L1 fields), then `Ended`.
Errors propagate as exceptions; the caller (a decoder thread or process) turns them into `Failed`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from pipeline.decoding.flow import flow_frames, flow_size
from pipeline.errors import StpipeError, VideoError
from pipeline.video import FrameSelection, even_short_side, iter_frames, probe, selected_indices, trim_range
from pipeline.views import VIEWS, num_views

# swscale filters for the weights' interpolation (torchvision's InterpolationMode values). Bilinear
# is also what PyAV uses when none is given, so bilinear weights decode exactly as before.
SCALER = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "POINT", "nearest-exact": "POINT",
          "lanczos": "LANCZOS", "box": "AREA"}


@dataclass(frozen=True)
class DecodeSpec:
    """What the decoders make of each video (picklable: it travels to decoder processes)."""

    resize: tuple[int, ...]  # the backbone's resize_size: (short side,) or (height, width)
    crop: int
    views: str
    select: FrameSelection = FrameSelection()
    chunk_frames: int = 64
    folder_fps: float = 12.0
    interpolation: str = "bilinear"
    flow_short_side: int = 0  # > 0: flow frames are made (shorter side), for the flow stream
    flow_itemsize: int = 1  # bytes per flow component (uint8 or float16 fields)
    ffmpeg_threads: int = 0  # FFmpeg's decoding threads (0 = its choice; 1 in a process per core)

    @property
    def num_views(self) -> int:
        return num_views(self.views)

    def crop_bytes(self) -> int:
        """Bytes of one frame's crops."""
        return self.num_views * 3 * self.crop * self.crop

    def field_bytes(self, width: int, height: int) -> int:
        """Bytes of one TV-L1 field of a video of this native size (0 without flow)."""
        if not self.flow_short_side:
            return 0
        fh, fw = flow_size(*self.sizes(width, height)[-1][::-1], self.flow_short_side)
        return 2 * fh * fw * self.flow_itemsize

    def sizes(self, width: int, height: int) -> list[tuple[int, int]]:
        """(width, height) to decode at: the backbone's, then the flow source's when flow needs more."""
        size = resized_size(width, height, self.resize)
        out = [size]
        if self.flow_short_side and min(size) < self.flow_short_side:
            out.append(even_short_side(width, height, self.flow_short_side))
        return out


def resized_size(width: int, height: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(resize)`: an exact (h, w), or the shorter side set
    and the longer one truncated (`_compute_resized_output_size`; tests/test_decoding.py checks)."""
    if len(resize) == 2:
        return int(resize[1]), int(resize[0])
    size = int(resize[0])
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


# ---- records --------------------------------------------------------------------------------


@dataclass
class Opened:
    """The video is open: its frame rate and how many frames the selection picks."""

    fps: float
    expected: int  # frames the selection picks


@dataclass
class Frames:
    indices: np.ndarray  # (n,) int64 source ordinals
    crops: np.ndarray | None  # (V, n, 3, crop, crop) uint8 (a tensor on the compute device from GPU decoders)
    fields: np.ndarray | None = None  # (n or n-1, 2, h, w) quantised TV-L1, when flow ran in the decoder
    flow_frames: np.ndarray | None = None  # (n, h, w, 3) uint8 flow-size frames, when flow runs elsewhere
    slot: int | None = None  # the shared-memory slot holding the arrays (decoder processes)
    # where the arrays lie in the slot: (shape of the crops region, its first n frames used,
    # then None or (attribute, shape, dtype) of the array after it)
    layout: tuple = ()

    def header(self) -> Frames:
        """The record without its arrays: what a decoder process sends down its pipe."""
        return replace(self, crops=None, fields=None, flow_frames=None)

    def from_memory(self, memory: np.ndarray) -> Frames:
        """The record with its arrays read (copied) out of `memory`, the slot's bytes."""
        region, extra = self.layout
        n = len(self.indices)
        size = int(np.prod(region))
        out = replace(self, crops=memory[:size].reshape(region)[:, :n].copy(), slot=None)
        if extra is not None:
            name, shape, dtype = extra
            offset = _aligned(size)
            dtype = np.dtype(dtype)
            array = memory[offset : offset + int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
            setattr(out, name, array.copy())
        return out


@dataclass
class Ended:
    pass


@dataclass
class Failed:
    error: str  # one line
    retry: bool  # transient (worth another attempt) vs deterministic (a bad file)


Record = Opened | Frames | Ended | Failed


def failure(exc: BaseException) -> Failed:
    """An exception as a record: decode errors (VideoError) are deterministic, others may be transient."""
    text = str(exc) if isinstance(exc, StpipeError) else f"{type(exc).__name__}: {exc}"
    return Failed((text.strip().splitlines() or [type(exc).__name__])[0][:300], not isinstance(exc, VideoError))


# ---- the decode loop ------------------------------------------------------------------------


class Buffers(Protocol):
    capacity: int  # bytes one chunk may use

    def acquire(self, nbytes: int) -> tuple[int | None, np.ndarray]:
        """(slot, uint8 buffer of at least nbytes); blocks until one is free."""


class OwnBuffers:
    """A fresh array per chunk: decoder threads hand their chunks over by reference."""

    capacity = 1 << 62

    def acquire(self, nbytes: int) -> tuple[None, np.ndarray]:
        return None, np.empty(nbytes, dtype=np.uint8)


@dataclass
class Task:
    """What a decoder needs of a video job."""

    path: str
    start: float | None = None
    end: float | None = None


@dataclass
class _Chunk:
    slot: int | None
    memory: np.ndarray
    crops: np.ndarray
    indices: list[int] = field(default_factory=list)
    small: list[np.ndarray] = field(default_factory=list)


def decode_video(task: Task, spec: DecodeSpec, buffers: Buffers, flow: Any | None = None,
                 ship_flow_frames: bool = False) -> Iterator[Record]:
    """Records of one video (see the module doc). `flow`: a `FlowStream` computing fields here;
    `ship_flow_frames`: hand flow-size frames on instead (flow computed by the consumer)."""
    info = probe(task.path, folder_fps=spec.folder_fps)
    first, stop = trim_range(info, task.start, task.end)
    wanted = selected_indices(info, first, stop, spec.select)
    sizes = spec.sizes(info.width, info.height)
    width, height = sizes[0]
    if height < spec.crop or width < spec.crop:
        raise VideoError(f"{task.path}: resized to {width}x{height}, smaller than the {spec.crop}x{spec.crop} crop")
    crops = VIEWS.get(spec.views)(height, width, spec.crop)
    c = spec.crop
    with_flow = bool(spec.flow_short_side) and (flow is not None or ship_flow_frames)
    per_frame = spec.crop_bytes() + (spec.field_bytes(info.width, info.height) if flow is not None else 0)
    if ship_flow_frames:
        fw, fh = sizes[-1]
        fh, fw = flow_size(fh, fw, spec.flow_short_side)
        per_frame += fh * fw * 3
    per_chunk = min(spec.chunk_frames, (buffers.capacity - 8) // per_frame)
    if per_chunk < 1:
        raise VideoError(f"{task.path}: one frame needs {per_frame} bytes, more than a decode slot "
                         f"({buffers.capacity}); raise --chunk-frames or lower --flow-short-side")
    if flow is not None:
        flow.reset()
    chunk: _Chunk | None = None
    started = False

    def emit(chunk: _Chunk) -> Frames:
        n = len(chunk.indices)
        fields = frames_out = extra = None
        if with_flow:
            small = flow_frames(np.stack(chunk.small), spec.flow_short_side)
            if flow is not None:
                fields = flow.push(small)
                fields = _place(chunk.memory, chunk.crops.nbytes, fields)
                extra = None if fields is None else ("fields", fields.shape, fields.dtype.str)
            else:
                frames_out = _place(chunk.memory, chunk.crops.nbytes, small)
                extra = ("flow_frames", small.shape, small.dtype.str)
        return Frames(np.asarray(chunk.indices, dtype=np.int64), chunk.crops[:, :n], fields, frames_out, chunk.slot,
                      (chunk.crops.shape, extra))

    select_done = 0
    scaler = SCALER.get(spec.interpolation)
    for index, arrays in iter_frames(task.path, info, wanted, sizes, stop=stop, threads=spec.ffmpeg_threads,
                                     interpolation=scaler):
        if chunk is None:
            n = min(per_chunk, len(wanted) - select_done)
            slot, memory = buffers.acquire(n * per_frame + 8)  # + alignment of the array after the crops
            view = memory[: spec.num_views * n * 3 * c * c].reshape(spec.num_views, n, 3, c, c)
            chunk = _Chunk(slot, memory, view)
        frame, i = arrays[0], len(chunk.indices)
        for v, crop in enumerate(crops):
            patch = frame[crop.top : crop.top + c, crop.left : crop.left + c]
            chunk.crops[v, i] = (patch[:, ::-1] if crop.flip else patch).transpose(2, 0, 1)
        chunk.indices.append(index)
        if with_flow:
            chunk.small.append(arrays[-1])
        select_done += 1
        if len(chunk.indices) == chunk.crops.shape[1]:
            if not started:
                started = True
                yield Opened(info.fps, len(wanted))
            yield emit(chunk)
            chunk = None
    if chunk is not None and chunk.indices:
        if not started:
            started = True
            yield Opened(info.fps, len(wanted))
        yield emit(chunk)
    if not started:
        raise VideoError(f"{task.path}: no frames selected (check start/end and the frame selection)")
    yield Ended()


def _aligned(offset: int) -> int:
    return (offset + 7) // 8 * 8


def _place(memory: np.ndarray, offset: int, array: np.ndarray | None) -> np.ndarray | None:
    """`array` copied into `memory` after `offset` bytes (8-aligned), as a view of the same shape."""
    if array is None:
        return None
    offset = _aligned(offset)
    out = memory[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def decode_fault(path: str) -> None:
    """Test hook (tests/faults): `STPIPE_DECODE_FAULT=crash:<text>` SIGKILLs, `hang:<text>` stalls the
    decoder process that takes a video whose path contains <text>. Unset: one dict lookup."""
    spec = os.environ.get("STPIPE_DECODE_FAULT")
    if not spec:
        return
    kind, _, text = spec.partition(":")
    if text and text in path:
        import signal
        import time

        if kind == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "hang":
            while True:
                time.sleep(60)


def default_processes() -> int:
    """The cores this process may run on (its affinity mask: a container's or a Ray worker's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
