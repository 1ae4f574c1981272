"""Micro-batches that fit the machine: the optimizer step stays `batch_size` videos, the forward and
backward passes run on as many of them at a time as the memory allows, gradients accumulating.

Every step's loss is already a sum over videos divided by the global batch (loop.py), so cutting a
worker's share into micro-batches changes the gradient only through what depends on the batch:
the statistics of BatchNorm layers in training mode. With frozen BN (the default) none does, so the
accumulated step is the plain step up to float rounding and dropout masks; with partial BN (TSN) only
each backbone's first BN uses batch statistics, taken over every frame and pixel of the micro-batch
(8 segments x 112 x 112 positions per video for the first layer of a 224-pixel backbone); with
`--batch-norm train` every BN normalises over the micro-batch: a different training.

How many fit is measured, not guessed: after the network is built and before any work, one frame
and then one clip go forward and backward in training mode (`Peak`: the rise of the resident set
on CPU, of allocated memory on CUDA); a clip's cost and the fixed part (gradients) follow from the
two, and the micro-batch is what fits in `BUDGET` of the memory available (`pipeline.memory`),
shared among the workers on the same machine. The probes leave the network as it was (batch-norm
statistics restored, gradients dropped).
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.errors import RunError
from pipeline.memory import GB, Available, Peak, available, release_free_memory

BUDGET = 0.4  # of the available memory, for the training step's activations and gradients
# The rest is for what is not measured: loader processes and their prefetched clips, evaluation,
# checkpoints, and the other programs on the machine, whose use can grow while this one runs.
OPTIMIZER_STATES = {"sgd": 1, "adamw": 2}  # per-parameter buffers the optimizer adds at its first step


@dataclass(frozen=True)
class Sizing:
    micro_batch: int  # videos per forward/backward on each worker
    accum_steps: int  # micro-batches per optimizer step on each worker
    share: int  # videos of a full step per worker
    clip_bytes: int = 0  # measured: what one more clip in a micro-batch costs (0 = not measured)
    fixed_bytes: int = 0  # measured: what a step costs whatever its size (gradients, optimizer state)
    available: Available | None = None
    local_workers: int = 1

    def describe(self) -> str:
        step = (f"micro-batch {self.micro_batch} video(s) x {self.accum_steps} accumulation step(s) = "
                f"{self.share} per worker and optimizer step")
        if not self.clip_bytes:
            return f"{step} (--micro-batch)"
        shared = f", shared by {self.local_workers} workers" if self.local_workers > 1 else ""
        return (f"{step}: a clip measured {self.clip_bytes / GB:.2f} GB to train (+{self.fixed_bytes / GB:.2f} GB "
                f"fixed), {self.available.describe()} available{shared}")

    def record(self) -> dict[str, Any]:
        return {"micro_batch": self.micro_batch, "accum_steps": self.accum_steps,
                "clip_gb": round(self.clip_bytes / GB, 3), "fixed_gb": round(self.fixed_bytes / GB, 3),
                "available_gb": round(self.available.bytes / GB, 2) if self.available else None,
                "available_from": self.available.source if self.available else None}


def plan(model, setup, *, device: torch.device, share: int, dist, amp: bool, dtype: torch.dtype,
         inputs_like: dict[str, torch.Tensor]) -> Sizing:
    """The micro-batch of every worker (the same on all: DDP needs the same number of backward passes)."""
    cfg = setup.cfg
    if cfg.micro_batch:
        micro = min(cfg.micro_batch, share)
        return Sizing(micro_batch=micro, accum_steps=math.ceil(share / micro), share=share)
    local = sum(host == socket.gethostname() for host in dist.all_gather(socket.gethostname()))
    mine = measure(model, setup, device=device, share=share, amp=amp, dtype=dtype, inputs_like=inputs_like,
                   local_workers=local, optimizer_states=OPTIMIZER_STATES.get(cfg.optimizer, 2))
    smallest = min(dist.all_gather(mine.micro_batch))
    return Sizing(micro_batch=smallest, accum_steps=math.ceil(share / smallest), share=share,
                  clip_bytes=mine.clip_bytes, fixed_bytes=mine.fixed_bytes, available=mine.available,
                  local_workers=local)


def measure(model, setup, *, device: torch.device, share: int, amp: bool, dtype: torch.dtype,
            inputs_like: dict[str, torch.Tensor], local_workers: int = 1, optimizer_states: int = 2) -> Sizing:
    free = available(device)
    segments = setup.segments
    params = [p for p in model.parameters() if p.requires_grad]
    grad_bytes = sum(p.numel() * p.element_size() for p in params)
    saved = {name: buf.clone() for name, buf in model.named_buffers()}  # BN statistics the probes would move
    was_training = model.training
    model.train()
    try:
        _step(model, _clip(inputs_like, 1, 1), device, amp, dtype, frames_only=True)  # one-off costs (kernels, pools)
        frame = _step(model, _clip(inputs_like, 1, 1), device, amp, dtype, frames_only=True)
        per_frame = max(frame - grad_bytes, frame // 2)
        estimate = grad_bytes * (1 + optimizer_states) + segments * per_frame
        if estimate > free.bytes / local_workers * 0.9:
            raise RunError(_too_big(setup, estimate, free, local_workers))
        clip = _step(model, _clip(inputs_like, 1, segments), device, amp, dtype, frames_only=False)
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        release_free_memory()
    clip_bytes = max((clip - frame) * segments // (segments - 1), 1) if segments > 1 else max(clip, 1)
    fixed = max(clip - clip_bytes, 0) + grad_bytes * optimizer_states
    micro = fit(clip_bytes, fixed, free, share=share, local_workers=local_workers, setup=setup)
    return Sizing(micro_batch=micro, accum_steps=math.ceil(share / micro), share=share, clip_bytes=clip_bytes,
                  fixed_bytes=fixed, available=free, local_workers=local_workers)


def fit(clip_bytes: int, fixed_bytes: int, free: Available, *, share: int, local_workers: int = 1, setup=None) -> int:
    """Videos per micro-batch: what fits `BUDGET` of this worker's part of the free memory, at most its
    share of a step; one at a time when a clip fits what is free but not the budget; else an error."""
    mine = free.bytes / local_workers
    micro = int((mine * BUDGET - fixed_bytes) // clip_bytes)
    if micro < 1 and clip_bytes + fixed_bytes > mine * 0.9:
        raise RunError(_too_big(setup, clip_bytes + fixed_bytes, free, local_workers))
    return max(1, min(micro, share))


def _too_big(setup, need: float, free: Available, local_workers: int) -> str:
    what = (f"{setup.segments} segments through "
            + ", ".join(f"{s} {setup.backbones[s]['name']}" for s in setup.streams)) if setup is not None else "a clip"
    shared = f" shared by {local_workers} workers on this machine" if local_workers > 1 else ""
    return (f"not enough memory to fine-tune even one clip ({what}): it needs "
            f"about {need / GB:.1f} GB, {free.describe()} is available{shared}; lower --segments, use a smaller "
            "backbone, free memory, run fewer --workers per machine or train on a GPU")


def _clip(like: dict[str, torch.Tensor], batch: int, segments: int) -> dict[str, torch.Tensor]:
    return {s: torch.zeros(batch, segments, *x.shape[2:], device=x.device, dtype=x.dtype) for s, x in like.items()}


def _step(model, inputs, device, amp: bool, dtype: torch.dtype, *, frames_only: bool) -> int:
    """Peak memory of one forward + backward in training mode (frames_only: the backbones alone)."""
    with Peak(device) as peak:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp):
            out = model.features(inputs) if frames_only else model(inputs)
            loss = sum(o.float().sum() for o in out.values())
        loss.backward()
        del out, loss
    model.zero_grad(set_to_none=True)
    return peak.bytes
