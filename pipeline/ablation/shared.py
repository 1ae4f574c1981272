"""The store's features read once for a whole ablation and shared by every trial without copies.

The reading is stage two's one loader (`pipeline.training.features`); this module says what a
grid needs and hands each trial its `TrainData`. On Ray the whole `SharedFeatures` goes into the
object store once: numpy buffers are stored out of band and mapped read-only by every trial on a
node, so four trials on one node hold one copy, not four.
"""

from __future__ import annotations

from typing import Any

from pipeline.ablation.grid import Grid, Trial
from pipeline.progress import Progress
from pipeline.store import FeatureStore
from pipeline.training.config import MODALITY_STREAMS
from pipeline.training.features import Features, load_features
from pipeline.training.loop import TrainData
from pipeline.training.model import head_input_kind


def is_pooled(head: str) -> bool:
    return head_input_kind(head) == "pooled"


class SharedFeatures(Features):
    """`Features` addressed by trial."""

    def train_data(self, trial: Trial) -> TrainData:  # type: ignore[override]
        return super().train_data(MODALITY_STREAMS[trial.modality], is_pooled(trial.head))

    def signature(self, trial: Trial) -> dict[str, Any]:  # type: ignore[override]
        return super().signature(MODALITY_STREAMS[trial.modality], is_pooled(trial.head))


def load_shared(store: FeatureStore, grid: Grid, *, val_split: str = "val", standardize: bool = False,
                memory_budget_bytes: float, stats_dir: str, storage_options: dict[str, Any] | None = None,
                progress: Progress | None = None, skip_damaged: bool = False) -> SharedFeatures:
    """Read what the grid's trials need, once."""
    uses = [(MODALITY_STREAMS[t.modality], is_pooled(t.head)) for t in grid.trials]
    found = load_features(store, uses=uses, splits=("train", val_split), memory_budget_bytes=memory_budget_bytes,
                          storage_options=storage_options, standardize=standardize, stats_dir=stats_dir,
                          progress=progress, skip_damaged=skip_damaged)
    return SharedFeatures(**found.__dict__)
