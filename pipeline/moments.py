"""Per-channel moments of feature arrays (the statistics stage two standardises with), in float64.

Shared by the pack (`pipeline.store.pack`, which keeps each split's statistics as it is built) and
stage two's statistics (`pipeline.training.stats`).
"""

from __future__ import annotations

import hashlib

import numpy as np

BLOCK_VALUES = 1 << 22  # values converted to float64 at a time (32 MiB)


def split_fingerprint(keys) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, keys))).encode()).hexdigest()[:16]


class Moments:
    """Running per-channel count, sum and sum of squares of (views, time, channel[, y, x]) blocks."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, None, None

    def add(self, values: np.ndarray) -> None:
        channels = values.shape[2]
        rows = values.reshape(values.shape[0] * values.shape[1], channels, -1)  # (view*time, C, y*x)
        if self.total is None:
            self.total, self.squares = np.zeros(channels), np.zeros(channels)
        step = max(1, BLOCK_VALUES // max(1, channels * rows.shape[2]))
        for start in range(0, rows.shape[0], step):
            block = rows[start:start + step].astype(np.float64)
            self.total += block.sum(axis=(0, 2))
            self.squares += np.einsum("tcp,tcp->c", block, block)
        self.count += rows.shape[0] * rows.shape[2]

    def merge(self, other: Moments) -> None:
        if other.total is None:
            return
        if self.total is None:
            self.total, self.squares = np.zeros_like(other.total), np.zeros_like(other.squares)
        self.count += other.count
        self.total += other.total
        self.squares += other.squares

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / max(self.count, 1)
        return mean, np.sqrt(np.maximum(self.squares / max(self.count, 1) - mean * mean, 0.0))
