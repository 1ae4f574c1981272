"""Stage two: train a temporal head on a feature store. `run(cfg) -> TrainHeadResult`.

Writes the run dir: config.yaml, checkpoint.pt (best val top-1), last.pt, metrics.jsonl (per epoch),
metrics.json (final), curves.png, confusion.png, and TensorBoard event files of the curves when
tensorboard is installed. The run itself is `pipeline.training.session.run_head`, which every
ablation trial calls too; features come from stage two's one loader (`load_data`).
Progress and notes go to `progress(event)` as pipeline.progress events; this module never prints.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import full_disk_as_error
from pipeline.progress import Progress
from pipeline.training.config import TrainHeadConfig
from pipeline.training.loop import TrainData
from pipeline.training.session import TrainHeadResult, load_data, run_head
from pipeline.training.tensorboard_events import epoch_curves

__all__ = ["TrainHeadResult", "load_data", "run"]


def run(cfg: TrainHeadConfig, *, progress: Progress | None = None, data: TrainData | None = None,
        signature: dict[str, Any] | None = None, plots: bool = True) -> TrainHeadResult:
    """`data` + `signature`: features already loaded; `plots`: write curves.png and confusion.png.
    With tensorboard installed, the curves also go to event files in the run dir."""
    with full_disk_as_error(cfg.out), epoch_curves(cfg.out, progress) as progress:
        return run_head(cfg, progress=progress, data=data, signature=signature, plots=plots)
