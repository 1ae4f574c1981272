"""Run plots: curves.png (loss and accuracy per epoch) and confusion.png (row-normalised)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_LABELLED_CLASSES = 40  # beyond this, tick labels are unreadable; the matrix still shows structure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], label="val")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.plot(epochs, [r["train_top1"] for r in history], label="train top-1")
    acc_ax.plot(epochs, [r["val_top1"] for r in history], label="val top-1")
    acc_ax.plot(epochs, [r["val_top5"] for r in history], label="val top-5", linestyle="--")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    for epoch in [r["epoch"] for prev, r in zip(history, history[1:]) if r["lr"] < prev["lr"]]:
        for ax in (loss_ax, acc_ax):
            ax.axvline(epoch, color="grey", alpha=0.4, linewidth=0.8)  # lr drops
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    plt = _pyplot()
    n = len(classes)
    support = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, support, out=np.zeros(confusion.shape, dtype=float), where=support > 0)
    side = min(16.0, 3.0 + 0.3 * n)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion (rows normalised)")
    if n <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
