"""Classification metrics from logits: top-k accuracy, mean class accuracy, confusion matrix."""

from __future__ import annotations

import numpy as np
import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return float(hits.float().mean()) if len(labels) else float("nan")


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat.cpu(), minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for classes absent from the evaluated split."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top1, top5, mean_class_acc (over classes present), confusion and per-class accuracy."""
    num_classes = logits.shape[1]
    confusion = confusion_matrix(logits.argmax(dim=1), labels, num_classes)
    per_class = per_class_accuracy(confusion)
    return {
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "mean_class_acc": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
        "confusion": confusion,
        "per_class": per_class,
    }
