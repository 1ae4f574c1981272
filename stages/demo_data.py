"""`stpipe demo-data`: a small labelled video set whose classes depend on temporal order, generated
(pipeline.demo_data) or cut from real footage (pipeline.footage_data, when `sources` are given)."""

from __future__ import annotations

from typing import Any

from pipeline.config import build_config
from pipeline.demo_data import DemoDataConfig, generate
from pipeline.errors import ConfigError
from pipeline.footage_data import FootageConfig
from pipeline.footage_data import generate as cut
from pipeline.progress import Progress

SYNTHETIC_ONLY = ("videos_per_class", "digits")
FOOTAGE_ONLY = ("train_clips", "val_clips", "val_sources")


def config(file: str | None, options: dict[str, Any]) -> DemoDataConfig | FootageConfig:
    """The config of the set `options` (flags; None = not given) ask for: FootageConfig with `sources`."""
    given = {name for name, value in options.items() if value not in (None, ())}
    if "sources" in given:
        if given & set(SYNTHETIC_ONLY):
            raise ConfigError("--videos-per-class and --digits are for the synthetic set, not with --from")
        return build_config(FootageConfig, file, {k: v for k, v in options.items() if k not in SYNTHETIC_ONLY})
    if given & set(FOOTAGE_ONLY):
        raise ConfigError("--train-clips, --val-clips and --val-sources need --from")
    return build_config(DemoDataConfig, file, {k: v for k, v in options.items()
                                               if k not in FOOTAGE_ONLY and k != "sources"})


def run(cfg: DemoDataConfig | FootageConfig, progress: Progress | None = None) -> str:
    """Write the set; a one-line summary of what was written."""
    if isinstance(cfg, FootageConfig):
        footage = cut(cfg, progress=progress)
        return f"wrote {footage.num_videos} clips cut from {len(footage.sources)} videos and {footage.manifest}"
    result = generate(cfg)
    return f"wrote {result.num_videos} videos ({result.glyphs}) and {result.manifest}"
