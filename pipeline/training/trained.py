"""A trained run opened for use (evaluate, predict, finetune): its config, a checkpoint, the model it
holds, its standardisation stats and the check that a store is the one it was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import StoreError
from pipeline.store import FeatureStore
from pipeline.training.config import TrainHeadConfig
from pipeline.training.model import build_model, head_input_kind, load_checkpoint
from pipeline.training.runs import check_signature, read_run_config, store_signature


@dataclass
class TrainedRun:
    dir: Path
    config: TrainHeadConfig
    checkpoint: dict[str, Any]  # checkpoint.pt (best val top-1) or last.pt

    @classmethod
    def open(cls, run_dir: str | Path, checkpoint: str = "checkpoint.pt") -> TrainedRun:
        return cls(Path(run_dir), read_run_config(run_dir), load_checkpoint(Path(run_dir) / checkpoint))

    @property
    def pooled(self) -> bool:
        return head_input_kind(self.config.head) == "pooled"

    @property
    def classes(self) -> list[str]:
        return self.checkpoint["classes"]

    @property
    def segments(self) -> int:
        return int(self.checkpoint["segments"])

    def model(self, device: torch.device | str = "cpu") -> nn.Module:
        model = build_model(self.checkpoint["spec"])
        model.load_state_dict(self.checkpoint["model"])
        return model.to(device)

    def stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{stream: (mean, std)} the run standardised its features with (empty: it did not)."""
        return {s: (v["mean"].numpy(), v["std"].numpy()) for s, v in self.checkpoint.get("stats", {}).items()}

    def open_store(self, url: str = "", storage_options: dict[str, Any] | None = None) -> FeatureStore:
        """`url` (default: the store the run was trained on)."""
        url = url or self.config.store
        try:
            return FeatureStore.open(url, storage_options=(storage_options or self.config.storage_options) or None)
        except StoreError as exc:
            if url != self.config.store:
                raise
            raise StoreError(f"run {self.dir} was trained on store {url}, which is gone or unreadable ({exc})") from None

    def check(self, store: FeatureStore, *, split: str = "train", url: str = "", own_classes: bool = False
              ) -> dict[str, Any]:
        """The store's signature, refused unless it is the one the run was trained on (classes, feature
        shapes, extract config); `own_classes`: a store of unlabelled videos, scored with the run's classes."""
        signature = store_signature(store, self.config.streams, pooled=self.pooled, split=split)
        if own_classes:
            signature["classes"] = self.classes
        check_signature(self.checkpoint["store"], signature, store_url=url or str(store.url), run=self.dir)
        return signature
