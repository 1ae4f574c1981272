"""GPU decoding: JPEG frame folders with nvJPEG, video files with NVDEC; the CPU for what they cannot.

`GpuDecoders` is a decoder pool like those of `pool.py` (jobs in, `(job, record)` pairs out, the
same `Opened` / `Frames` / `Ended` / `Failed` records) whose `Frames.crops` are uint8 tensors on
the compute device, so the frames never cross the PCIe bus as pixels:

  JPEG folders  the selected files read as bytes, decoded in batches by
                `torchvision.io.decode_jpeg(list, device="cuda")` (nvJPEG)
  video files   a `VideoSource`: NVDEC through PyNvVideoCodec (`NvdecSource`, the `nvdec` extra,
                imported only here and only when used)

then resized and cropped on the device (`DeviceViews`) to what the CPU decoders make: the same
`resized_size`, the same views, uint8. The frame selection is the CPU path's (`probe`,
`trim_range`, `selected_indices`): ordinals count decoded frames in presentation order.

A video the GPU cannot decode (a folder of PNGs, a codec or profile NVDEC lacks, the library
raising on open) goes to a CPU pool (`decoders.build`'s, started on first use) with one note
naming it and why; the run goes on. A video that fails on the GPU after its first frames were
handed over comes back `Failed(retry=True)` and its retry is decoded on the CPU.

PyNvVideoCodec, not torchcodec: its wheel carries its own demuxer (FFmpeg's libavformat) and CUDA
runtime and needs only the driver, for any torch; torchcodec's wheel loads the system's FFmpeg
shared libraries and is built for one torch version (README.md, "Decoding").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.decoding.core import DecodeSpec, Ended, Failed, Frames, Opened, Task, failure, resized_size
from pipeline.decoding.pool import DecoderThreads
from pipeline.errors import VideoError
from pipeline.progress import Note, Progress, emitter
from pipeline.video import VideoInfo, folder_images, probe, selected_indices, trim_range
from pipeline.views import VIEWS

JPEG_SUFFIXES = (".jpg", ".jpeg")
NVDEC_LIBRARY = "PyNvVideoCodec"
NVDEC_INSTALL = "pip install 'stpipe-video[nvdec]'"


class Unsupported(Exception):
    """The GPU cannot decode this video (not a JPEG folder, a codec NVDEC lacks): the CPU will."""


class VideoSource(Protocol):
    """Video files decoded on the device."""

    name: str

    def batches(self, path: str, stop: int) -> Iterator[torch.Tensor]:
        """Consecutive frames from the first, in presentation order, as uint8 `(n, 3, H, W)` tensors on
        the device, until `stop` frames or the stream's end. Raises when it cannot decode the file."""


def nvdec_missing() -> str | None:
    """None when PyNvVideoCodec imports here, else why not (one line). Its import loads the driver's
    video libraries, so a missing driver shows here, not in the middle of a run."""
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or RuntimeError from its driver check
        lines = str(exc).strip().splitlines()
        return f"{NVDEC_LIBRARY} not importable: {(lines[0] if lines else type(exc).__name__)[:200]}"
    return None


class NvdecSource:
    """NVDEC through PyNvVideoCodec's `SimpleDecoder` on `device`'s current stream. Each thread keeps
    its decoder and points it at the next file (`reconfigure_decoder`, PyNvVideoCodec's cache of
    decoder sessions): creating a session per video would cost tens of ms on every short clip."""

    name = NVDEC_LIBRARY

    def __init__(self, device: torch.device, batch: int = 64):
        import PyNvVideoCodec as nvc

        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.nvc, self.device, self.batch = nvc, device, batch
        self._local = threading.local()

    def _stream(self):
        """The device's current stream (None on the CPU device, where tests run this with a stand-in module)."""
        return torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None

    def _decoder(self, path: str, stream):
        decoder = getattr(self._local, "decoder", None)
        if decoder is not None:
            try:
                decoder.reconfigure_decoder(path)
                return decoder
            except Exception:  # noqa: BLE001 - a session that cannot take this file: a fresh one may
                self._local.decoder = None
        nvc = self.nvc
        decoder = nvc.SimpleDecoder(path, gpu_id=self.device.index or 0,
                                    cuda_stream=stream.cuda_stream if stream is not None else 0,
                                    use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
        self._local.decoder = decoder
        return decoder

    def batches(self, path: str, stop: int) -> Iterator[torch.Tensor]:
        stream = self._stream()
        decoder = self._decoder(path, stream)
        done = 0
        try:
            while done < stop:
                frames = decoder.get_batch_frames(min(self.batch, stop - done))
                if len(frames) == 0:
                    return
                batch = torch.stack([_chw(torch.from_dlpack(frame)) for frame in frames])  # a copy of ours
                if batch.dtype != torch.uint8:
                    raise Unsupported(f"NVDEC gives {batch.dtype} frames (high bit depth)")
                if stream is not None:
                    stream.synchronize()  # the decoder reuses its surfaces on the next call
                done += len(frames)
                yield batch
        except Exception:
            self._local.decoder = None  # the next video gets a fresh session, not one in an unknown state
            raise


def _chw(frame: torch.Tensor) -> torch.Tensor:
    """(3, H, W) from PyNvVideoCodec's interleaved (H, W, 3) (or already planar) RGB frame."""
    return frame.permute(2, 0, 1) if frame.shape[-1] == 3 and frame.shape[0] != 3 else frame


class DeviceViews:
    """(n, 3, H, W) uint8 frames -> `(V, n, 3, crop, crop)` uint8 views, on the frames' device: torchvision's
    antialiased resize to `resized_size` (what PIL and FFmpeg's scaler give the CPU path, within a level
    or so), then the crops of `spec.views` (slices, a flip)."""

    def __init__(self, spec: DecodeSpec, width: int, height: int, interpolation: str = "bilinear"):
        from torchvision.transforms import InterpolationMode

        self.width, self.height = resized_size(width, height, spec.resize)
        self.crop = spec.crop
        self.crops = VIEWS.get(spec.views)(self.height, self.width, spec.crop)
        self.mode = InterpolationMode(interpolation)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        if tuple(frames.shape[-2:]) != (self.height, self.width):
            frames = F.resize(frames, [self.height, self.width], interpolation=self.mode, antialias=True)
        c = self.crop
        views = []
        for crop in self.crops:
            patch = frames[:, :, crop.top : crop.top + c, crop.left : crop.left + c]
            views.append(patch.flip(-1) if crop.flip else patch)
        return torch.stack(views).contiguous()


def jpeg_frames(files: list[Path], wanted: np.ndarray, size: tuple[int, int], device: torch.device,
                batch: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(ordinals, uint8 (n, 3, H, W) frames on `device`) of a frame folder's `wanted` files, `batch`
    at a time: bytes read on the host, decoded together (nvJPEG on CUDA, libjpeg-turbo on the CPU)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    for i in range(0, len(wanted), batch):
        take = wanted[i : i + batch]
        data = [read_file(str(files[k])) for k in take.tolist()]
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        for k, image in zip(take.tolist(), images):
            if (image.shape[2], image.shape[1]) != size:
                raise VideoError(f"{files[k]}: frame size {image.shape[2]}x{image.shape[1]} differs from the "
                                 f"folder's {size[0]}x{size[1]}")
        yield take, torch.stack(images)


def selected_frames(batches: Iterator[torch.Tensor], wanted: np.ndarray, stop: int,
                    info: VideoInfo) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(ordinals, frames) of the `wanted` ordinals (non-decreasing, repeats kept) out of consecutive
    decoded batches; a stream shorter than its packets by a small tail is tolerated, as on the CPU."""
    base = pos = 0
    for batch in batches:
        end = min(base + batch.shape[0], stop)
        hi = int(np.searchsorted(wanted, end, side="left"))
        if hi > pos:
            take = wanted[pos:hi]
            yield take, batch.index_select(0, torch.as_tensor(take - base, device=batch.device))
            pos = hi
        base += batch.shape[0]
        if pos == len(wanted) or base >= stop:
            return
    if pos < len(wanted) and (base == 0 or stop - base > max(2, stop // 100)):
        raise VideoError(f"{info.path}: stream ended at frame {base}, expected {info.num_frames} frames")


@dataclass
class _Plan:
    info: VideoInfo
    wanted: np.ndarray
    stop: int


def plan(task: Task, spec: DecodeSpec) -> _Plan:
    """What the CPU path would select (its errors are the CPU path's: a bad file fails, not falls back)."""
    info = probe(task.path, folder_fps=spec.folder_fps)
    first, stop = trim_range(info, task.start, task.end)
    wanted = selected_indices(info, first, stop, spec.select)
    width, height = resized_size(info.width, info.height, spec.resize)
    if height < spec.crop or width < spec.crop:
        raise VideoError(f"{task.path}: resized to {width}x{height}, smaller than the {spec.crop}x{spec.crop} crop")
    return _Plan(info, wanted, stop)


def decode_on_device(task: Task, spec: DecodeSpec, device: torch.device, video: VideoSource | None,
                     work: _Plan | None = None) -> Iterator[Opened | Frames | Ended]:
    """The records `core.decode_video` makes of this video, decoded on `device` (crops as device tensors).
    Raises `Unsupported` (or the decoder's own error) when the GPU cannot decode it."""
    work = work or plan(task, spec)
    info, wanted = work.info, work.wanted
    if info.is_folder:
        files = folder_images(Path(task.path))
        others = sorted({f.suffix.lower() for f in files} - set(JPEG_SUFFIXES))
        if others:
            raise Unsupported(f"the folder holds {', '.join(others)} images; nvJPEG reads JPEG only")
        # the CPU path resizes frame folders with PIL's bilinear whatever the weights' interpolation
        views = DeviceViews(spec, info.width, info.height, "bilinear")
        pieces = jpeg_frames(files, wanted, (info.width, info.height), device, spec.chunk_frames)
    else:
        if video is None:
            raise Unsupported("no GPU video decoder")
        views = DeviceViews(spec, info.width, info.height, spec.interpolation)
        pieces = selected_frames(video.batches(task.path, work.stop), wanted, work.stop, info)
    started = False
    for ordinals, frames in pieces:
        crops = views(frames)
        for j in range(0, len(ordinals), spec.chunk_frames):
            if not started:
                started = True
                yield Opened(info.fps, len(wanted))
            yield Frames(np.asarray(ordinals[j : j + spec.chunk_frames], dtype=np.int64),
                         crops[:, j : j + spec.chunk_frames])
    if not started:
        raise VideoError(f"{task.path}: no frames selected (check start/end and the frame selection)")
    yield Ended()


def jpeg_works(device: torch.device) -> str | None:
    """None when this torchvision decodes JPEG on `device`, else why not (a torchvision without nvJPEG)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    try:
        decode_jpeg([encode_jpeg(torch.zeros((3, 16, 16), dtype=torch.uint8))], device=device)
    except Exception as exc:  # noqa: BLE001
        return f"nvJPEG unavailable ({type(exc).__name__}: {str(exc).strip()[:150]})"
    return None


@dataclass
class _Fallback:
    """A GPU decoder thread's word that a video goes to the CPU (handled in `poll`, never returned)."""

    reason: str
    after_frames: bool  # frames were already handed over: the video is failed and retried on the CPU


class GpuDecoders(DecoderThreads):
    """`threads` threads decoding on `device` (JPEG folders when `jpeg`, video files through `video`),
    handing device tensors over through a bounded queue; other videos go to `cpu()`, a CPU pool made
    on first use. `progress` gets a Note of each fallback, from the thread that polls."""

    kind = "gpu"

    def __init__(self, spec: DecodeSpec, device, *, video: VideoSource | None, jpeg: bool,
                 cpu: Callable[[], Any], threads: int = 2, progress: Progress | None = None):
        self.spec, self.device, self.video, self.jpeg = spec, torch.device(device), video, jpeg
        self.emit = emitter(progress)
        self._make_cpu, self.cpu = cpu, None
        self.on_cpu: set[str] = set()  # paths that failed on the GPU: decoded on the CPU from now on
        self.fallbacks = 0
        # decoded chunks wait on the device in the bounded queue: it bounds the device memory they hold
        self._start_threads(threads, "stpipe-gpu-decode")

    def describe(self) -> str:
        what = [w for w, on in (("JPEG frame folders with nvJPEG", self.jpeg),
                                (f"video files with NVDEC ({getattr(self.video, 'name', '?')})", self.video))
                if on]
        return (f"decoding on {self.device}: {' and '.join(what) or 'nothing'} in {self.workers} thread(s); "
                "other videos on the CPU")

    # ---- jobs in, records out ----------------------------------------------------------------

    def submit(self, job) -> None:
        if self._on_gpu(job.path):
            self._todo.put(job)
        else:
            self._cpu().submit(job)

    def poll(self, timeout: float) -> list[tuple[Any, Any]]:
        out = self._drain(0.0)
        if self.cpu is not None:
            out += self.cpu.poll(0.0 if out else timeout / 2)
        if not out:
            out = self._drain(timeout / 2 if self.cpu is not None else timeout)
        return out

    def pending(self) -> bool:
        return not self._out.empty() or (self.cpu is not None and self.cpu.pending())

    def close(self) -> None:
        self._stop_threads()
        if self.cpu is not None:
            self.cpu.close()
            self.cpu = None

    # ---- internals ---------------------------------------------------------------------------

    def _on_gpu(self, path: str) -> bool:
        if path in self.on_cpu:
            return False
        return self.jpeg if Path(path).is_dir() else self.video is not None

    def _cpu(self):
        if self.cpu is None:
            self.cpu = self._make_cpu()
            self.emit(Note(f"{self.cpu.describe()}, for the videos not decoded on {self.device}", source=""))
        return self.cpu

    def _drain(self, timeout: float) -> list[tuple[Any, Any]]:
        records = []
        for job, record in self._take(timeout):
            if not isinstance(record, _Fallback):
                records.append((job, record))
                continue
            self.fallbacks += 1
            self.on_cpu.add(job.path)
            self.emit(Note(f"{job.path}: decoded on the CPU ({record.reason})", source=""))
            if record.after_frames:
                records.append((job, Failed(f"GPU decoding failed after its first frames ({record.reason}); "
                                            "retried on the CPU", retry=True)))
            else:
                self._cpu().submit(job)
        return records

    def _loop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        while not self._stop.is_set():
            job = self._todo.get()
            if job is None:
                return
            task = Task(job.path, job.start, job.end)
            try:
                work = plan(task, self.spec)
            except Exception as exc:  # noqa: BLE001 - a bad file fails as it would on the CPU
                self._out.put((job, failure(exc)))
                continue
            sent = False
            try:
                for record in decode_on_device(task, self.spec, self.device, self.video, work):
                    self._out.put((job, record))
                    sent = True
                    if self._stop.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - whatever the GPU decoder raises, the CPU gets a go
                lines = str(exc).strip().splitlines()
                reason = (lines[0] if lines else type(exc).__name__)[:200]
                if not isinstance(exc, (Unsupported, VideoError)):
                    reason = f"{type(exc).__name__}: {reason}"
                self._out.put((job, _Fallback(reason, after_frames=sent)))
