"""Stage two: train a temporal head on a feature store. `run(cfg) -> TrainHeadResult`.

The run itself (run dir, checkpoints, metrics, plots) is `pipeline.training.session.run_head`, which
every ablation trial calls too; features come from stage two's one loader (`load_data`).
"""

from __future__ import annotations

from typing import Any

from pipeline.training.config import TrainHeadConfig
from pipeline.training.loop import Callback, TrainData
from pipeline.training.session import TrainHeadResult, load_data, run_head

__all__ = ["TrainHeadResult", "load_data", "run"]


def run(cfg: TrainHeadConfig, *, callback: Callback | None = None, data: TrainData | None = None,
        signature: dict[str, Any] | None = None, plots: bool = True) -> TrainHeadResult:
    """`data` + `signature`: features already loaded; `plots`: write curves.png and confusion.png."""
    return run_head(cfg, callback=callback, data=data, signature=signature, plots=plots)
