"""Telling a run that did not train from one that trained badly.

A head can collapse to predicting the label prior: its training loss stays at the loss of the best
constant prediction (the entropy of the training labels, ln K when balanced) and it predicts one
class. Its val top-1 is then the share of that class, which looks like an ordinary (poor) result in
a table. `collapse_notes` says so, so a run's metrics.json, the terminal and ablate's summary can
mark it instead of averaging it in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# "clearly below" the constant-prediction loss: a head that learns anything on its training split
# gets its loss at least 5% under it within a few epochs (dropout noise is well under that)
CLEARLY_BELOW = 0.95


def prior_entropy(labels: np.ndarray, num_classes: int) -> float:
    """Cross-entropy of the best constant prediction (the training labels' frequencies)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum()) if len(p) else 0.0


def collapse_notes(history: Sequence[dict[str, Any]], train_labels: np.ndarray, num_classes: int,
                   val_confusion: np.ndarray | None, classes: Sequence[str]) -> list[str]:
    """Notes on a collapsed run ([] for a run that trained): its training loss never fell clearly
    below the constant-prediction loss, and/or its val predictions are all one class."""
    notes = []
    floor = prior_entropy(train_labels, num_classes)
    losses = [r["train_loss"] for r in history if math.isfinite(r.get("train_loss", math.nan))]
    if losses and floor > 0 and min(losses) > CLEARLY_BELOW * floor:
        notes.append(f"collapsed: the training loss never fell clearly below the constant-prediction loss "
                     f"(lowest {min(losses):.3f} vs {floor:.3f}, the label prior's entropy) in {len(losses)} "
                     "epochs: the head did not train; try another --lr, --standardize, or more epochs")
    if val_confusion is not None and num_classes > 1:
        predicted = np.flatnonzero(np.asarray(val_confusion).sum(axis=0))
        if len(predicted) == 1 and np.asarray(val_confusion).sum() > 1:
            notes.append(f"collapsed: every val clip is predicted as one class ({classes[int(predicted[0])]!r}); "
                         "its top-1 is that class's share, not a result")
    return notes
