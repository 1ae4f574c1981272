"""Stage one's plain records: a video to extract, a run's totals (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.store import Failure

TASK = "extract"  # the progress task whose units are videos (pipeline.progress)


@dataclass
class VideoJob:
    video_id: str
    path: str
    label: str | None
    label_index: int
    split: str
    start: float | None = None
    end: float | None = None
    attempts: int = 0
    group: str | None = None  # the manifest's group column (what the video shares with others)


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    batches: int = 0  # backbone forwards of image backbones
    padded_rows: int = 0  # zero rows among them: compute spent on nothing
