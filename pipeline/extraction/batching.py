"""Batching and staging to the device: uint8 crops of several videos -> fixed-size backbone batches.

Batches are always exactly `size` rows (the tail is zero-padded), so a frame's features do not
depend on which other videos happened to share its batch: resumed runs are bit-identical. On CUDA
a batch goes up from pinned memory without blocking, and its features come back while the next
batch runs (`in_flight` batches), so the GPU does not wait on the compute thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


class Batcher:
    """Queues `(owner, crops (V, n, C, h, w) uint8)` and runs the backbone on whole batches;
    `deliver(owner, views, k, features (V, k, ...) float16 numpy)` gets each owner's rows in order."""

    def __init__(self, backbone, device, size: int, *, in_flight: int, pinned: bool,
                 deliver: Callable[[Any, int, int, Any], None], stats,
                 forwarded: Callable[[int, float], None] | None = None):
        self.backbone, self.device, self.size = backbone, torch.device(device), size
        self.in_flight, self.pinned, self.deliver, self.stats = in_flight, pinned, deliver, stats
        # after each batch: its real rows and the seconds it took this thread (threads.py)
        self.forwarded = forwarded or (lambda rows, seconds: None)
        self.pending: list[tuple[Any, torch.Tensor]] = []
        self.outputs: list[tuple[torch.Tensor, Any, list]] = []  # (features, copy-done event, owners)
        self._inputs: torch.Tensor | None = None  # the CPU input batch, reused (the forward is synchronous there)

    def add(self, owner, crops: torch.Tensor) -> None:
        self.pending.append((owner, crops))

    def run(self, force: bool) -> None:
        """Run the backbone on exactly `size` rows (padding only when forced to drain)."""
        while self.pending:
            rows = sum(x.shape[0] * x.shape[1] for _, x in self.pending)
            if rows < self.size and not force:
                return
            take, batch, owners = self.size, [], []
            while self.pending and take > 0:
                owner, x = self.pending[0]
                views, n = x.shape[:2]
                k = min(n, max(1, take // views))
                if views * k > take and batch:
                    break
                batch.append(x[:, :k].flatten(0, 1))
                owners.append((owner, views, k))
                if k == n:
                    self.pending.pop(0)
                else:
                    self.pending[0] = (owner, x[:, k:])
                take -= views * k
            started = time.perf_counter()
            inputs, real = self.stage(batch)
            self.stats.batches += 1
            self.stats.padded_rows += self.size - real
            feats = self.backbone.forward_features(inputs)[:real]
            self.outputs.append(self.download(feats.to(torch.float16), owners))
            self.scatter(keep=self.in_flight)
            self.forwarded(real, time.perf_counter() - started)
        if force:
            self.scatter(keep=0)

    def stage(self, batch: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(the backbone's input: the rows normalised, zero rows after them up to `size`; the real rows)."""
        normalize = self.backbone.preprocessor.normalize
        if self.device.type == "cpu" and all(x.device.type == "cpu" for x in batch):
            # one pass per piece, uint8 straight into a reused float32 batch: concatenating, converting
            # and normalising as three ops cost 3x the time and 2 temporaries (and on a CPU the
            # decoders are waiting for these cores)
            real = sum(x.shape[0] for x in batch)
            shape = (self.size, *batch[0].shape[1:])
            if self._inputs is None or self._inputs.shape != shape:
                self._inputs = torch.empty(shape, dtype=torch.float32)
            row = 0
            for x in batch:
                normalize(x, out=self._inputs[row : row + x.shape[0]])
                row += x.shape[0]
            self._inputs[real:].zero_()
            return self._inputs, real
        inputs = normalize(self.upload(batch))
        real = inputs.shape[0]
        if real < self.size:
            inputs = torch.cat([inputs, inputs.new_zeros((self.size - real, *inputs.shape[1:]))])
        return inputs, real

    def upload(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """Concatenated uint8 crops on the device; on CUDA through pinned memory, without blocking.

        The pinned block comes from torch's caching host allocator, which keeps it until the copy
        that reads it has finished, so it is safe to drop here.
        """
        if any(x.device.type != "cpu" for x in batch):  # GPU-decoded crops (maybe beside CPU-decoded ones)
            return torch.cat([x.to(self.device) for x in batch])
        if not self.pinned:
            return torch.cat(batch).to(self.device)
        rows = sum(x.shape[0] for x in batch)
        staging = torch.empty((rows, *batch[0].shape[1:]), dtype=batch[0].dtype, pin_memory=True)
        torch.cat(batch, out=staging)
        return staging.to(self.device, non_blocking=True)

    def download(self, feats: torch.Tensor, owners: list) -> tuple[torch.Tensor, Any, list]:
        """Start copying a batch's float16 features to the host; the event says when they are there."""
        if not self.pinned:
            return feats.cpu(), None, owners
        host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
        host.copy_(feats, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done, owners

    def scatter(self, keep: int) -> None:
        """Hand finished batches' features to their owners, oldest first, leaving `keep` in flight."""
        while len(self.outputs) > keep:
            host, done, owners = self.outputs.pop(0)
            if done is not None:
                done.synchronize()
            feats, offset = host.numpy(), 0
            for owner, views, k in owners:
                part = feats[offset : offset + views * k].reshape(views, k, *feats.shape[1:])
                offset += views * k
                self.deliver(owner, views, k, part)
