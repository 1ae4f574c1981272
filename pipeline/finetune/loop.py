"""The fine-tune loop: one process of a (possibly) data-parallel run, Ray-free.

`train_worker(setup, run_dir=..., dist=Dist(...))` is what every worker runs: in-process for one
worker, or inside Ray Train (pipeline/distributed.py) with torch.distributed already initialised.

A step takes `batch_size` videos (the global batch, the same list for every world size); worker r
takes every world-th of them and cuts its share into micro-batches of what its memory allows
(`sizing.plan`, measured before any work; `micro_batch` sets it), gradients accumulating. Each micro-batch
loss is sum(per-sample losses) x world / global batch, so DDP's gradient average equals the mean
over the whole global batch: 2 workers step exactly as 1 worker does, up to float rounding
(except for BatchNorm statistics, which each worker computes on its own share, as DDP does).
A video that fails to decode contributes nothing (the denominator stays the nominal batch).
Per-stream cross-entropy averaged over streams, as stage two trains. Mixed precision on CUDA.

Checkpoints (rank 0): last.pt every epoch and every `checkpoint_every` steps (everything needed to
continue; sampling depends only on (seed, epoch, step), so no RNG state is needed and a resumed run
replays the same batches), checkpoint.pt whenever val top-1 improves (starting with the untouched
network, evaluated before the first step: if fine-tuning never beats it, that is what is kept),
metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.device import amp_dtype, grad_scaler
from pipeline.errors import RunError
from pipeline.finetune.data import ClipDataset, StepBatches, epoch_steps, eval_batches, make_loader
from pipeline.finetune.model import FinetuneModel, build_finetune_model, fuse
from pipeline.finetune.sizing import plan
from pipeline.finetune.source import Setup
from pipeline.progress import Advanced, Finished, Note, Progress, Started, emitter
from pipeline.training.loop import (
    epoch_line,
    load_last_checkpoint,
    save_last_checkpoint,
    write_jsonl,
)
from pipeline.training.metrics import classification_metrics
from pipeline.training.model import CHECKPOINT_FORMAT, save_checkpoint
from pipeline.training.schedules import OPTIMIZERS, SCHEDULES

MAX_FAILURE_NOTES = 10


@dataclass
class Dist:
    """Where this worker sits in the run. world > 1 expects an initialised torch.distributed group."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def all_gather(self, value: Any) -> list[Any]:
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out




def train_worker(setup: Setup, *, run_dir: str | Path, dist: Dist | None = None, progress: Progress | None = None,
                 report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or continue, when run_dir holds a last.pt of this config) and return the run state.
    Only the lead worker reports `progress`: each epoch as a task of micro-batches, finished with its line."""
    cfg = setup.cfg
    dist = dist or Dist()
    lead = dist.rank == 0
    emit = emitter(progress if lead else None)
    run_dir = Path(run_dir)
    device = dist.device
    amp = cfg.amp and device.type == "cuda"

    model = build_finetune_model(setup, device=device)
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameter_groups(cfg.lr, cfg.backbone_lr_mult), cfg)
    schedule = SCHEDULES[cfg.schedule](optimizer, cfg)
    scaler, dtype = grad_scaler(device, amp), amp_dtype(device)
    state = {"epoch": 0, "step": 0, "partial": None, "history": [], "best_top1": -1.0, "best_epoch": 0,
             "train_seconds": 0.0, "step_seconds": 0.0, "frames": 0, "failures": {}, "stopped": ""}
    if (run_dir / "last.pt").is_file():
        saved = load_last_checkpoint(run_dir / "last.pt", cfg, model, optimizer, schedule, scaler,
                                     kind="finetune-last", name="finetune last.pt")
        state = dict(saved["state"])
        emit(Note(f"resuming {run_dir} at epoch {state['epoch'] + 1}, step {state['step']}"))
    for note in setup.notes:
        emit(Note(note))

    pre = {s: model.backbones[s].preprocessor for s in setup.streams}
    ghost = _ghost_inputs(setup, pre, device)
    # before any work and before DDP: the probes must not run its gradient hooks
    sizing = plan(model, setup, device=device, share=math.ceil(cfg.batch_size / dist.world), dist=dist, amp=amp,
                  dtype=dtype, inputs_like=ghost)
    state["sizing"] = sizing.record()
    emit(Note(sizing.describe()))
    accum = sizing.accum_steps
    net = model
    if dist.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    train_set = ClipDataset(setup, setup.train, preprocessors=pre, train=True)
    val_set = ClipDataset(setup, setup.val, preprocessors=pre, train=False)

    def save_last() -> None:
        if lead:
            save_last_checkpoint(run_dir / "last.pt", cfg, state, model, optimizer, schedule, scaler,
                                 kind="finetune-last")

    if "start" not in state:  # the network before any step: the head run's, on decoded frames
        val = evaluate(model, val_set, num_classes=len(setup.classes), dist=dist, batch_size=cfg.eval_batch_size,
                       workers=cfg.loader_workers, amp=amp)
        state["start"] = _summary(val, epoch=0)
        state["best_top1"], state["best_epoch"] = val["top1"], 0
        emit(Note(f"start: val top-1 {val['top1']:.2%}, loss {val['loss']:.4f} (before fine-tuning)"))
        if lead:
            save_checkpoint(best_payload(setup, model, epoch=0, val=val), run_dir / "checkpoint.pt")
            save_last()

    while state["epoch"] < cfg.epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        schedule.start_epoch(epoch - 1)
        lr = optimizer.param_groups[0]["lr"]
        steps = epoch_steps(len(train_set), batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch,
                            min_last=max(2, dist.world))
        first = state["step"]
        partial = state["partial"] or {"loss": 0.0, "hits": 0, "seen": 0, "failed": [], "seconds": 0.0, "cpu": 0.0}
        task = f"epoch {epoch}/{cfg.epochs}"
        emit(Started(task, total=(len(steps) - first) * accum, unit="batch", transient=True))
        batches = StepBatches(steps, epoch=epoch, rank=dist.rank, world=dist.world, accum=accum, skip=first)
        model.train()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device)
        seen = 0
        failed: list[tuple[int, str]] = []
        micro = iter(make_loader(train_set, batches, workers=cfg.loader_workers, pin_memory=device.type == "cuda"))
        tick, tick_cpu = time.perf_counter(), cpu_seconds()
        for step in range(first, len(steps)):
            optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(hash((cfg.seed, epoch, step, dist.rank)) % 2**63)  # dropout masks, replayed on resume
            for a in range(accum):
                batch = next(micro)
                failed += batch["failed"]
                for _, reason in batch["failed"]:
                    if len(state["failures"]) + len(failed) <= MAX_FAILURE_NOTES:
                        emit(Note(f"skipping a video that failed: {reason}"))
                sync = net.no_sync() if dist.world > 1 and a < accum - 1 else contextlib.nullcontext()
                with sync:
                    n = len(batch["labels"])
                    if n == 0 and dist.world == 1:
                        continue
                    inputs = {s: x.to(device, non_blocking=True) for s, x in batch["inputs"].items()} if n else ghost
                    labels = (batch["labels"].to(device, non_blocking=True) if n
                              else torch.zeros(1, dtype=torch.long, device=device))
                    with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp):
                        per_stream = net(inputs)
                        summed = sum(F.cross_entropy(o.float(), labels, reduction="sum") for o in per_stream.values())
                        summed = summed / len(per_stream)
                    scale = (dist.world / len(steps[step])) if n else 0.0
                    scaler.scale(summed * scale).backward()
                if n:
                    with torch.no_grad():
                        loss_sum += summed.detach()
                        hits += (fuse(per_stream, model.fusion_weights).argmax(1) == labels).sum()
                    seen += n
                emit(Advanced(task, amounts={"samples": n}))
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            state["step"] = step + 1
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0 and state["step"] < len(steps):
                state["partial"] = _merge(partial, loss_sum, hits, seen, failed, time.perf_counter() - tick,
                                          cpu_seconds() - tick_cpu, dist)
                save_last()
        del micro  # stops the loader processes now, so their CPU time is counted below
        totals = _merge(partial, loss_sum, hits, seen, failed, time.perf_counter() - tick, cpu_seconds() - tick_cpu,
                        dist)
        val = evaluate(model, val_set, num_classes=len(setup.classes), dist=dist, batch_size=cfg.eval_batch_size,
                       workers=cfg.loader_workers, amp=amp)
        state["stopped"] = schedule.end_epoch(val["loss"])
        if not math.isfinite(totals["loss"]) or not math.isfinite(val["loss"]):
            state["stopped"] = (f"training diverged in epoch {epoch} (the loss is not finite); the best checkpoint "
                                "is kept; lower --lr or --backbone-lr-mult")
        for videos, failures in ((setup.train, totals["failed"]), (setup.val, val["failed"])):
            for index, reason in failures:
                state["failures"].setdefault(videos[index].video_id, reason)
        record = {**_summary(val, epoch=epoch), "lr": lr, "train_loss": totals["loss"] / max(totals["seen"], 1),
                  "train_top1": totals["hits"] / max(totals["seen"], 1), "train_videos": totals["seen"], "failed_videos": len(totals["failed"]) + len(val["failed"]),
                  "seconds": time.perf_counter() - started,
                  "frames_per_second": totals["seen"] * setup.segments / totals["seconds"] if totals["seconds"] else 0.0,
                  "cpu_seconds": totals["cpu"],  # all workers and their loader processes
                  "micro_batch": sizing.micro_batch, "accum_steps": accum,
                  "frames_per_cpu_second": totals["seen"] * setup.segments / totals["cpu"] if totals["cpu"] else 0.0}
        state.update(epoch=epoch, step=0, partial=None)
        state["history"].append(record)
        state["train_seconds"] += record["seconds"]
        state["step_seconds"] += totals["seconds"]
        state["frames"] += totals["seen"] * setup.segments
        state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + totals["cpu"]
        improved = val["top1"] > state["best_top1"]
        if improved:
            state["best_top1"], state["best_epoch"] = val["top1"], epoch
        if lead:
            if improved:
                save_checkpoint(best_payload(setup, model, epoch=epoch, val=val), run_dir / "checkpoint.pt")
            save_last()
            write_jsonl(run_dir / "metrics.jsonl", state["history"])
        line = epoch_line(record, state["stopped"], f"{record['frames_per_second']:.1f} frames/s")
        emit(Finished(task, summary=line, item=record))
        if report is not None:
            report(record)
    return state


@torch.no_grad()
def evaluate(model: FinetuneModel, dataset: ClipDataset, *, num_classes: int, dist: Dist, batch_size: int,
             workers: int, amp: bool = False) -> dict[str, Any]:
    """Centre frames, centre crops, streams' scores averaged; the split is shared out over the workers."""
    model.eval()
    device = dist.device
    logits = torch.zeros(len(dataset), num_classes, device=device)
    got = torch.zeros(len(dataset), device=device)
    failed: list[tuple[int, str]] = []
    loader = make_loader(dataset, eval_batches(len(dataset), batch_size=batch_size, rank=dist.rank, world=dist.world),
                         workers=workers, pin_memory=device.type == "cuda")
    for batch in loader:
        failed += batch["failed"]
        if not len(batch["labels"]):
            continue
        inputs = {s: x.to(device, non_blocking=True) for s, x in batch["inputs"].items()}
        with torch.autocast(device_type=device.type, dtype=amp_dtype(device), enabled=amp):
            out = fuse(model(inputs), model.fusion_weights).float()
        index = batch["index"].to(device)
        logits[index], got[index] = out, 1.0
    dist.all_reduce(logits)
    dist.all_reduce(got)
    failed = [f for part in dist.all_gather(failed) for f in part]
    ok = got > 0
    if not ok.any():
        raise RunError(f"every one of the {len(dataset)} validation videos failed to load (first: {failed[0][1]})")
    labels = torch.tensor([v.label for v in dataset.videos])
    kept, kept_labels = logits.cpu()[ok.cpu()], labels[ok.cpu()]
    metrics = classification_metrics(kept, kept_labels)
    metrics["loss"] = float(F.cross_entropy(kept, kept_labels))
    metrics["failed"] = failed
    metrics["logits"], metrics["loaded"] = logits.cpu(), ok.cpu()
    return metrics


def best_payload(setup: Setup, model: FinetuneModel, *, epoch: int, val: dict[str, Any]) -> dict[str, Any]:
    cfg = setup.cfg
    return {
        "format": CHECKPOINT_FORMAT, "kind": "finetune", "spec": setup.head_spec,
        "finetune": {"streams": list(setup.streams), "fusion": cfg.fusion, "st_stages": list(cfg.st_stages),
                     "temporal_kernel": cfg.temporal_kernel, "batch_norm": cfg.batch_norm, "backbones": setup.backbones},
        "model": model.state_dict(), "classes": list(setup.classes), "epoch": epoch, "val_top1": val["top1"],
        "val_confusion": torch.as_tensor(val["confusion"]), "segments": setup.segments,
        "stats": {s: {"mean": torch.as_tensor(m), "std": torch.as_tensor(v)} for s, (m, v) in setup.stats.items()},
        "store": setup.signature,
    }  # fmt: skip


# ---- helpers ------------------------------------------------------------------------------------


def _merge(partial, loss_sum, hits, seen, failed, seconds, cpu, dist: Dist) -> dict[str, Any]:
    """This epoch's totals over all workers (and over the part done before a mid-epoch resume)."""
    sums = torch.tensor([float(loss_sum), float(hits), float(seen), float(cpu)], dtype=torch.float64)
    sums = dist.all_reduce(sums.to(dist.device)).cpu()
    gathered = [f for part in dist.all_gather(list(failed)) for f in part]
    return {"loss": partial["loss"] + float(sums[0]), "hits": partial["hits"] + int(sums[1]),
            "seen": partial["seen"] + int(sums[2]), "failed": partial["failed"] + gathered,
            "seconds": partial["seconds"] + seconds, "cpu": partial.get("cpu", 0.0) + float(sums[3])}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader processes of past epochs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _summary(val: dict[str, Any], *, epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
            "val_mean_class_acc": val["mean_class_acc"]}


def _ghost_inputs(setup: Setup, pre: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """A zero clip: a worker whose micro-batch lost every video still joins DDP's gradient sync (x 0)."""
    return {s: torch.zeros(1, setup.segments, p.channels, p.crop_size, p.crop_size, device=device)
            for s, p in pre.items()}

