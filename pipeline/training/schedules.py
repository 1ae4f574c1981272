"""Optimisers and learning-rate schedules by name (a config's `optimizer` and `schedule`), for
stage two (`pipeline.training.loop`) and fine-tuning (`pipeline.finetune.loop`) alike.

A schedule is made right after its optimizer, before a resumed run loads their states:
`start_epoch(epoch)` sets the lr, `end_epoch(val_loss)` returns '' or why to stop, and `state` is
what a checkpoint keeps.
"""

from __future__ import annotations

import math
from typing import Any

import torch

OPTIMIZERS = {
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
    "adamw": lambda params, cfg: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
}


class PlateauSchedule:
    """lr /= 10 when val loss has not improved (relatively, by `threshold`) for `patience` epochs;
    after `drops` reductions the next plateau stops training."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg):
        self.optimizer, self.patience, self.threshold, self.max_drops = optimizer, cfg.plateau_patience, cfg.plateau_threshold, cfg.lr_drops
        self.state = {"best": math.inf, "bad_epochs": 0, "drops": 0}

    def start_epoch(self, epoch: int) -> None:
        pass

    def end_epoch(self, val_loss: float) -> str:
        """'' to continue, else why to stop."""
        s = self.state
        if val_loss < s["best"] * (1 - self.threshold):
            s["best"], s["bad_epochs"] = val_loss, 0
            return ""
        s["bad_epochs"] += 1
        if s["bad_epochs"] < self.patience:
            return ""
        if s["drops"] >= self.max_drops:
            return f"val loss plateaued after {s['drops']} lr reductions"
        s["drops"] += 1
        s["bad_epochs"] = 0
        for group in self.optimizer.param_groups:  # every group: fine-tuning's backbone keeps its multiplier
            group["lr"] /= 10
        return ""


class CosineSchedule:
    """Every group's lr follows half a cosine from its initial value to 0 over cfg.epochs (a
    fine-tuned backbone's group keeps its multiplier)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg):
        self.optimizer, self.epochs = optimizer, cfg.epochs
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.state: dict[str, Any] = {}

    def start_epoch(self, epoch: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))

    def end_epoch(self, val_loss: float) -> str:
        return ""


SCHEDULES = {"plateau": PlateauSchedule, "cosine": CosineSchedule}
