"""A small, deterministic, labelled video set where the class depends on temporal order.

Classes come in time-reversed pairs (moving left / moving right, rotating cw / ccw, zooming in /
out, appearing / disappearing): the two classes of a pair show the same distribution of frames,
only in opposite order. An order-blind head (TSN's average) can therefore do no better than chance
within a pair, while order-aware heads (MLP, TRN, RNNs, FCNs) can separate them: the finding
of Köpüklü et al., reproducible in minutes. The moving object is a handwritten digit from `digits.png`
(OpenCV's 5,000-digit sheet) when available, else a procedural shape; its identity is a distractor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from manifests import Manifest, VideoEntry, classes_path, write_manifest
from pipeline.config import arg
from pipeline.errors import ConfigError

CLASSES = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "rotating clockwise",
    "rotating counter-clockwise",
    "zooming in",
    "zooming out",
    "appearing",
    "disappearing",
)


@dataclass(frozen=True)
class DemoDataConfig:
    out: str = arg("demo-data", "Output folder (footage-data with --from).", short="-o")
    videos_per_class: int = arg(24, "Videos per class (not with --from).")
    frames: int = arg(16, "Frames per video (10 with --from).")
    size: int = arg(112, "Frame side in pixels.")
    fps: int = 12
    val_fraction: float = 0.25
    seed: int = arg(0, "Random seed.")
    digits: str = arg("", "Path to digits.png (default: $STPIPE_ASSETS/images/digits.png, else shapes).")

    def __post_init__(self) -> None:
        if self.videos_per_class < 2:
            raise ConfigError(f"videos_per_class must be >= 2 (one train, one val), got {self.videos_per_class}")
        if self.frames < 2:
            raise ConfigError(f"frames must be >= 2, got {self.frames}")
        if self.size < 32 or self.size % 2:
            raise ConfigError(f"size must be an even number >= 32, got {self.size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class DemoData:
    manifest: Path
    classes: Path
    num_videos: int
    glyphs: str  # "digits" or "shapes"


def generate(cfg: DemoDataConfig) -> DemoData:
    """Write `out/videos/*.mp4`, `out/manifest.csv`, `out/manifest.classes.txt` and the config that made
    them, `out/demo-data.yaml` (what a later run or a reader checks the videos against)."""
    from pipeline.config import save_config

    out = Path(cfg.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    glyphs, kind = _load_glyphs(cfg.digits)
    rng = np.random.default_rng(cfg.seed)
    entries = []
    n_val = max(1, round(cfg.videos_per_class * cfg.val_fraction))
    for label_index, label in enumerate(CLASSES):
        for k in range(cfg.videos_per_class):
            video_id = f"{label.replace(' ', '_')}_{k:03d}"
            path = out / "videos" / f"{video_id}.mp4"
            frames = render_clip(label_index, glyphs[rng.integers(len(glyphs))], rng, cfg.frames, cfg.size)
            write_mp4(path, frames, cfg.fps)
            split = "val" if k < n_val else "train"
            entries.append(VideoEntry(video_id, f"videos/{video_id}.mp4", label, split))
    manifest = out / "manifest.csv"
    write_manifest(Manifest(entries=entries, classes=list(CLASSES)), manifest)
    save_config(cfg, out / "demo-data.yaml")
    return DemoData(manifest, classes_path(manifest), len(entries), kind)


def render_clip(label_index: int, glyph: np.ndarray, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """(frames, size, size, 3) uint8 clip of `glyph` moving as class `label_index` says."""
    background = _background(rng, size)
    colour = rng.uniform(0.6, 1.0, size=3)
    t = np.linspace(0.0, 1.0, frames)
    pair, reverse = divmod(label_index, 2)
    # One motion per pair, played forwards or backwards: identical frame distributions.
    tt = t[::-1] if reverse else t
    base = 0.45 * size
    cx, cy = rng.uniform(0.35, 0.65, size=2) * size
    angle0, scale0 = rng.uniform(-20, 20), rng.uniform(0.9, 1.1)
    travel = rng.uniform(0.3, 0.45) * size
    x, y, angle, scale, alpha = (np.full(frames, v, dtype=np.float64) for v in (cx, cy, angle0, scale0, 1.0))
    if pair == 0:  # left (forwards) / right
        x = cx + travel * (0.5 - tt)
    elif pair == 1:  # up / down
        y = cy + travel * (0.5 - tt)
    elif pair == 2:  # clockwise / counter-clockwise (image y points down: negative angle = clockwise)
        angle = angle0 - 120.0 * tt
    elif pair == 3:  # zooming in / out
        scale = 0.5 + 0.9 * tt
    else:  # appearing / disappearing
        alpha = tt
    clip = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        sprite = _transform(glyph, int(base * scale[i]), angle[i])
        clip[i] = _composite(background, sprite, x[i], y[i], colour, alpha[i])
    return clip


def _transform(glyph: np.ndarray, side: int, angle: float) -> np.ndarray:
    image = Image.fromarray(glyph).resize((max(4, side), max(4, side)), Image.BILINEAR)
    return np.asarray(image.rotate(angle, resample=Image.BILINEAR, expand=True), dtype=np.float32) / 255.0


def _composite(background, sprite, x, y, colour, alpha) -> np.ndarray:
    frame = background.copy()
    h, w = sprite.shape
    top, left = int(round(y - h / 2)), int(round(x - w / 2))
    size = frame.shape[0]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, size), min(left + w, size)
    if y1 > y0 and x1 > x0:
        mask = sprite[y0 - top : y1 - top, x0 - left : x1 - left, None] * alpha
        frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - mask) + colour * mask
    return (frame * 255).round().astype(np.uint8)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random texture: gives flow something to lock onto without moving."""
    coarse = rng.uniform(0.05, 0.45, size=(8, 8, 3)).astype(np.float32)
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    noise = rng.normal(0.0, 0.02, size=(size, size, 3))
    return np.clip(np.asarray(image, dtype=np.float32) / 255.0 + noise, 0, 1)


def _load_glyphs(digits: str) -> tuple[list[np.ndarray], str]:
    path = Path(digits) if digits else _default_digits()
    if path is not None and path.is_file():
        sheet = np.asarray(Image.open(path).convert("L"))
        if sheet.shape[0] % 20 or sheet.shape[1] % 20:
            raise ConfigError(f"{path}: expected a sheet of 20x20 digit cells (OpenCV digits.png)")
        cells = sheet.reshape(sheet.shape[0] // 20, 20, sheet.shape[1] // 20, 20).swapaxes(1, 2)
        cells = cells.reshape(-1, 20, 20)
        # keep well-inked cells only; every 10th digit is plenty of variety
        picked = [c for c in cells[::10] if c.mean() > 20]
        return [np.pad(c, 4) for c in picked], "digits"
    if digits:
        raise ConfigError(f"{digits}: digits image not found")
    return _shapes(), "shapes"


def _default_digits() -> Path | None:
    assets = os.environ.get("STPIPE_ASSETS")
    return Path(assets) / "images" / "digits.png" if assets else None


def _shapes() -> list[np.ndarray]:
    n = 28
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    disc = (xx**2 + yy**2 < 11**2) & (xx**2 + yy**2 > 6**2)
    square = (abs(xx) < 10) & (abs(yy) < 10) & ~((abs(xx) < 5) & (abs(yy) < 5))
    triangle = (yy > -10) & (yy < 10) & (abs(xx) < (yy + 10) / 2)
    cross = ((abs(xx) < 3) | (abs(yy) < 3)) & (abs(xx) < 12) & (abs(yy) < 12)
    arrow = ((abs(yy) < 3) & (xx > -11) & (xx < 4)) | ((xx >= 4) & (abs(yy) < 11 - xx) & (xx < 11))
    return [(m * 255).astype(np.uint8) for m in (disc, square, triangle, cross, arrow)]


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)

