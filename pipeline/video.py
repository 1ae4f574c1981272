"""Video reading: PyAV files and frame folders, trimming, frame selection, resizing, streaming.

Everything yields uint8 RGB frames `(n, H, W, 3)` in bounded chunks together with their source
frame numbers, so a 10,000-frame 1080p video never sits in memory whole. Header frame counts are
not trusted (AVI indexes lie: tree.avi claims 444 frames and holds 68), so `probe` counts packets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.errors import VideoError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FOLDER_FPS = 12.0  # Jester and Something-Something v1 frames were extracted at 12 fps


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    is_folder: bool
    # presentation time (s) of each frame, from the packets; None for folders (constant fps)
    times: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def duration(self) -> float:
        if self.times is not None and len(self.times):
            return float(self.times[-1]) + 1.0 / self.fps
        return self.num_frames / self.fps if self.fps > 0 else 0.0


@dataclass(frozen=True)
class FrameSelection:
    """Which frames to keep, applied after trimming to [start, end).

    mode: `all` frames, every `step`-th, resampled to a target `fps`, or `num` frames spread
    uniformly (the centre of `num` equal segments, as TSN does at test time).
    """

    mode: Literal["all", "step", "fps", "uniform"] = "all"
    step: int = 1
    fps: float = 0.0
    num: int = 0
    max_frames: int = 0  # 0 = no cap; otherwise the first max_frames selected frames

    def __post_init__(self) -> None:
        if self.mode == "step" and self.step < 1:
            raise VideoError(f"frame step must be >= 1, got {self.step}")
        if self.mode == "fps" and self.fps <= 0:
            raise VideoError(f"target fps must be > 0, got {self.fps}")
        if self.mode == "uniform" and self.num < 1:
            raise VideoError(f"uniform selection needs num >= 1, got {self.num}")
        if self.max_frames < 0:
            raise VideoError(f"max_frames must be >= 0, got {self.max_frames}")


@dataclass(frozen=True)
class Chunk:
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    indices: np.ndarray  # (n,) int64 frame ordinals in presentation order (0 = first frame)


def probe(path: str | os.PathLike, *, folder_fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
    """Frame count, fps and size. Counts demuxed packets (cheap) instead of trusting headers."""
    path = Path(path)
    if path.is_dir():
        files = folder_images(path)
        width, height = _image_size(files[0])
        return VideoInfo(str(path), len(files), float(folder_fps), width, height, True)
    with open_video(path) as container:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            pts = [p.pts for p in container.demux(stream) if p.size]
        except Exception as exc:  # noqa: BLE001 - any demux failure means the file is unreadable
            raise VideoError(f"{path}: cannot read video packets ({_reason(exc)})") from None
        base = stream.start_time or 0
        time_base = float(stream.time_base) if stream.time_base else 0.0
    if not pts:
        raise VideoError(f"{path}: video stream has no frames")
    if time_base and all(p is not None for p in pts):
        times = (np.sort(np.asarray(pts, dtype=np.float64)) - base) * time_base
    else:  # no timestamps: assume a constant rate
        times = np.arange(len(pts), dtype=np.float64) / fps
    return VideoInfo(str(path), len(pts), fps, width, height, False, times)


def iter_chunks(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    select: FrameSelection = FrameSelection(),
    short_side: int | None = None,
    chunk_size: int = 64,
    threads: int = 0,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    info: VideoInfo | None = None,
) -> Iterator[Chunk]:
    """Decode `path` lazily into chunks of at most `chunk_size` selected, resized frames.

    `threads` = 0 lets FFmpeg choose; `short_side` resizes (keeping aspect) inside the decoder.
    Raises VideoError naming the file when it cannot be opened or decoded.
    """
    if chunk_size < 1:
        raise VideoError(f"chunk_size must be >= 1, got {chunk_size}")
    info = info or probe(path, folder_fps=folder_fps)
    first, stop = trim_range(info, start, end)
    wanted = selected_indices(info, first, stop, select)
    size = even_short_side(info.width, info.height, short_side)
    buf: list[np.ndarray] = []
    idx: list[int] = []
    for index, (frame,) in iter_frames(path, info, wanted, [size], stop=stop, threads=threads):
        buf.append(frame)
        idx.append(index)
        if len(buf) == chunk_size:
            yield Chunk(np.stack(buf), np.asarray(idx, dtype=np.int64))
            buf, idx = [], []
    if buf:
        yield Chunk(np.stack(buf), np.asarray(idx, dtype=np.int64))


def read_frames(path: str | os.PathLike, **kwargs) -> np.ndarray:
    """All selected frames as one `(T, H, W, 3)` uint8 array (use `iter_chunks` for long videos)."""
    frames, _ = read_frames_with_indices(path, **kwargs)
    return frames


def read_frames_with_indices(path: str | os.PathLike, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(iter_chunks(path, **kwargs))
    if not chunks:
        raise VideoError(f"{path}: no frames selected (check start/end and the frame selection)")
    return np.concatenate([c.frames for c in chunks]), np.concatenate([c.indices for c in chunks])


def read_frames_at(
    path: str | os.PathLike,
    ordinals: np.ndarray,
    *,
    short_side: int | None = None,
    threads: int = 0,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    info: VideoInfo | None = None,
) -> np.ndarray:
    """The frames at these source ordinals (as a store's `frame_index` records them), `(n, H, W, 3)`.

    Ordinals must be non-decreasing (repeats allowed); decoding stops after the last one, and a
    frame folder reads only the files asked for. Stage three samples training frames with this.
    """
    wanted = np.asarray(ordinals, dtype=np.int64)
    if wanted.ndim != 1 or len(wanted) == 0 or (np.diff(wanted) < 0).any() or wanted[0] < 0:
        raise VideoError(f"{path}: frame ordinals must be a non-empty, non-decreasing list of indices")
    info = info or probe(path, folder_fps=folder_fps)
    if wanted[-1] >= info.num_frames:
        raise VideoError(f"{path}: frame {wanted[-1]} asked for, the video has {info.num_frames} frames")
    size = even_short_side(info.width, info.height, short_side)
    frames = iter_frames(path, info, wanted, [size], stop=int(wanted[-1]) + 1, threads=threads)
    out = [frame for _, (frame,) in frames]
    if len(out) != len(wanted):
        raise VideoError(f"{path}: stream ended before frame {wanted[-1]} ({len(out)} of {len(wanted)} frames)")
    return np.stack(out)


def iter_frames(
    path: str | os.PathLike,
    info: VideoInfo,
    wanted: np.ndarray,
    sizes: list[tuple[int, int]],
    *,
    stop: int | None = None,
    threads: int = 0,
    interpolation: str | None = None,
) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """`(ordinal, frames)` for each wanted ordinal (non-decreasing), one uint8 `(h, w, 3)` array per
    `(width, height)` in `sizes`, each scaled from the decoded picture in FFmpeg's scaler (PIL for
    frame folders): C code, no Python per pixel. `stop` ends decoding (default: the last frame);
    `interpolation` is a swscale filter name (PyAV's `Interpolation`; None = its bilinear default)."""
    stop = info.num_frames if stop is None else stop
    if info.is_folder:
        return _folder_frames(Path(path), wanted, sizes)
    return _decoded_frames(Path(path), info, stop, wanted, sizes, threads, interpolation)


# ---- frame selection ------------------------------------------------------------------------


def _frame_times(info: VideoInfo) -> np.ndarray:
    if info.times is not None:
        return info.times
    return np.arange(info.num_frames, dtype=np.float64) / info.fps


def trim_range(info: VideoInfo, start: float | None, end: float | None) -> tuple[int, int]:
    """[first, stop) frame ordinals whose presentation times fall in [start, end) seconds."""
    if start is not None and end is not None and end <= start:
        raise VideoError(f"{info.path}: end ({end}) must be after start ({start})")
    times = _frame_times(info)
    eps = 1e-6
    first = 0 if start is None else int(np.searchsorted(times, start - eps, side="left"))
    stop = info.num_frames if end is None else int(np.searchsorted(times, end - eps, side="left"))
    if first >= stop:
        raise VideoError(
            f"{info.path}: trim window [{start}, {end}) s holds no frames (video has "
            f"{info.num_frames} frames over {times[-1]:.2f} s)"
        )
    return first, stop


def selected_indices(info: VideoInfo, first: int, stop: int, select: FrameSelection) -> np.ndarray:
    span = np.arange(first, stop, dtype=np.int64)
    if select.mode == "step":
        chosen = span[:: select.step]
    elif select.mode == "fps":
        # the latest frame shown at each tick of the target clock (works for variable frame rates)
        times = _frame_times(info)[first:stop]
        ticks = times[0] + np.arange(0.0, times[-1] - times[0] + 1e-9, 1.0 / select.fps)
        pos = np.clip(np.searchsorted(times, ticks + 1e-6, side="right") - 1, 0, len(span) - 1)
        chosen = span[np.unique(pos)]
    elif select.mode == "uniform":
        n = len(span)
        centres = ((np.arange(select.num) + 0.5) * n / select.num).astype(np.int64)
        chosen = span[np.minimum(centres, n - 1)]  # repeats frames when the video is shorter than num
    else:
        chosen = span
    if select.max_frames:
        chosen = chosen[: select.max_frames]
    return chosen


def even_short_side(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side near `short_side` (unchanged without one), both even."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    # even sizes keep codecs and chroma subsampling happy downstream
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


# ---- files ----------------------------------------------------------------------------------


def open_video(path: Path):
    import av

    if not path.exists():
        raise VideoError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for unreadable files
        raise VideoError(f"{path}: not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 25.0


def _decoded_frames(path, info, stop, wanted, sizes, threads, interpolation=None):
    if len(wanted) == 0:
        return
    wanted_set = iter(wanted.tolist())
    target = next(wanted_set)
    from av.video.reformatter import VideoReformatter

    scalers = [VideoReformatter() for _ in sizes]  # one per size and video: swscale reuses its setup
    with open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.thread_count = threads
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if index >= stop:
                    break
                while target is not None and target < index:
                    target = next(wanted_set, None)  # duplicates in `wanted` (uniform on short videos)
                if target != index:
                    continue
                arrays = tuple(_rgb(frame, scaler, w, h, interpolation) for scaler, (w, h) in zip(scalers, sizes))
                while target == index:
                    yield index, arrays
                    target = next(wanted_set, None)
                if target is None:
                    break
        except VideoError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise VideoError(f"{path}: decoding failed at frame {index + 1} ({_reason(exc)})") from None
    if target is not None:
        # Packet counts can exceed decodable frames by a few (e.g. a trailing broken packet):
        # tolerate a short tail by stopping there, fail loudly on a truncated stream.
        if index < 0 or stop - (index + 1) > max(2, stop // 100):
            raise VideoError(f"{path}: stream ended at frame {index + 1}, expected {info.num_frames} frames")


def _rgb(frame, scaler, width: int, height: int, interpolation: str | None) -> np.ndarray:
    """The frame scaled to `(height, width, 3)` uint8 RGB: a channels-last view of planar RGB.

    swscale's planar output (gbrp) scales about twice as fast as its packed rgb24 (SIMD output;
    720x528 -> 349x256: ~0.3 vs ~0.7 ms a frame) and is closer to torchvision's antialiased resize of
    the native frame, which the weights were trained with: fewer large errors when shrinking (at some
    sizes the two are identical), a lower mean error when enlarging (tests/test_decoding.py,
    benchmarks/README.md, "the scaler's planar output"). The planar layout is also what the crops want:
    copying `(3, c, c)` out of the view is a plane copy, not a transpose."""
    planar = scaler.reformat(frame, format="gbrp", width=width, height=height, interpolation=interpolation,
                             threads=1)
    g, b, r = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in planar.planes)
    return np.stack((r, g, b)).transpose(1, 2, 0)


def folder_images(path: Path) -> list[Path]:
    try:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise VideoError(f"{path}: cannot list frame folder ({exc.strerror})") from None
    if not files:
        raise VideoError(f"{path}: frame folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _image_size(file: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(file) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001
        raise VideoError(f"{file}: not a readable image ({_reason(exc)})") from None


def _folder_frames(path: Path, wanted: np.ndarray, sizes) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    from PIL import Image

    files = folder_images(path)
    expected = _image_size(files[0])
    for index in wanted.tolist():
        file = files[index]
        try:
            with Image.open(file) as image:
                if image.size != expected:
                    raise VideoError(
                        f"{file}: frame size {image.size[0]}x{image.size[1]} differs from the "
                        f"folder's {expected[0]}x{expected[1]}"
                    )
                rgb = image.convert("RGB")
                arrays = tuple(np.asarray(rgb if rgb.size == tuple(size) else rgb.resize(tuple(size), Image.BILINEAR),
                                          dtype=np.uint8) for size in sizes)
                yield index, arrays
        except VideoError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise VideoError(f"{file}: not a readable image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
