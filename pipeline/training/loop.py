"""The training loop: a recipe (pipeline.heads.recipes) on cached features, resumable, reproducible on CPU.

SGD (momentum 0.9, weight decay 5e-4 on all parameters) with cross-entropy; the learning rate drops
10x when the validation loss stops improving, twice, and the next plateau ends training (Köpüklü et al.
sec. 4.1). Cosine decay and AdamW are options. Multi-stream models train one loss per stream (the
two-stream papers train each stream on its own labels; a joint softmax overfits to appearance)
and predict with the average of the streams' non-softmaxed scores (late fusion: weighted,
pipeline.training.fusion). Mixed precision on CUDA (bfloat16 where the GPU has it, so no
GradScaler and no host sync per step; else float16).

`train(cfg, data)` takes already-loaded `TrainData`, so an ablation loads a store once and trains
many heads from it. With `run_dir` it writes last.pt every epoch (everything needed to continue,
including every RNG state, so a resumed CPU run ends bit-identical to an uninterrupted one),
checkpoint.pt whenever val top-1 improves, and metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.device import amp_dtype, amp_on, grad_scaler, pick_device
from pipeline.errors import RunError
from pipeline.progress import Advanced, Finished, Note, Progress, Started, emitter
from pipeline.training.batches import MemoryFeatures, Standardizer, eval_plans, train_plans
from pipeline.training.collapse import collapse_notes
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import SplitData
from pipeline.training.identity import check_checkpoint, identity
from pipeline.training.metrics import classification_metrics
from pipeline.training.model import (
    CHECKPOINT_FORMAT,
    build_model,
    load_checkpoint,
    model_complexity,
    model_spec,
    save_checkpoint,
)
from pipeline.training.schedules import OPTIMIZERS, SCHEDULES
from pipeline.training.streaming import ZarrFeatures, iterate_batches


@dataclass
class TrainData:
    train: SplitData
    val: SplitData
    classes: list[str]
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # {stream: (mean, std)}


@dataclass
class TrainResult:
    model: nn.Module
    spec: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    val: dict[str, Any]  # metrics of the best checkpoint on val (with confusion, per_class)
    complexity: dict[str, int]
    epochs: int
    stopped: str  # why training ended
    train_seconds: float
    samples_per_second: float
    notes: list[str]
    collapsed: bool = False  # did not train (pipeline.training.collapse); its notes say how




# ---- data sources -------------------------------------------------------------------------------


def make_source(split: SplitData, *, device: torch.device, num_segments: int,
                stats: dict[str, tuple[np.ndarray, np.ndarray]] | None, max_batch: int):
    standardizers = {s: Standardizer(*stats[s], device=device, spatial=len(d.frame_shape) == 3)
                     for s, d in split.streams.items() if stats and s in stats}
    if split.streamed:
        return ZarrFeatures(split, device=device, num_segments=num_segments, standardizers=standardizers)
    return MemoryFeatures(split, device=device, num_segments=num_segments, standardizers=standardizers,
                          max_batch=max_batch)


def num_views(split: SplitData) -> int:
    return max(d.views for d in split.streams.values())


@torch.no_grad()
def predict(model: nn.Module, source, *, views: int, batch_size: int, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (averaged over all cached views, before softmax) and labels for a whole split."""
    model.eval()
    device_type, dtype = source.device.type, amp_dtype(source.device)
    logits, labels = [], []
    total, count = None, 0
    for x, y in iterate_batches(source, eval_plans(len(source), batch_size), views=range(views)):
        with torch.autocast(device_type=device_type, dtype=dtype, enabled=amp):
            out = model(x).float()
        total = out if total is None else total + out
        count += 1
        if count == views:
            logits.append(total / views)
            labels.append(y.clone())
            total, count = None, 0
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, source, *, views: int, batch_size: int, amp: bool = False) -> dict[str, Any]:
    return logit_metrics(*predict(model, source, views=views, batch_size=batch_size, amp=amp))


def logit_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """classification_metrics plus the cross-entropy `loss`."""
    metrics = classification_metrics(logits, labels)
    metrics["loss"] = float(F.cross_entropy(logits, labels))
    return metrics


def data_notes(data: TrainData) -> list[str]:
    notes = list(data.train.notes) + [n for n in data.val.notes if n not in data.train.notes]
    missing = sorted(set(range(len(data.classes))) - set(np.unique(data.train.labels).tolist()))
    if missing:
        names = ", ".join(repr(data.classes[c]) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        notes.append(f"{len(missing)} class(es) have no training videos and cannot be learned: {names}")
    return notes


def epoch_line(record: dict[str, Any], stopped: str, throughput: str) -> str:
    """One line per finished epoch, one format for train-head and finetune."""
    return (f"epoch {record['epoch']:3d}  lr {record['lr']:.2e}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  val top-1 {record['val_top1']:.2%}  top-5 {record['val_top5']:.2%}  "
            f"{throughput}" + (f"  ({stopped})" if stopped else ""))


# ---- the loop -----------------------------------------------------------------------------------


def train(cfg: TrainHeadConfig, data: TrainData, *, run_dir: str | Path | None = None, resume: bool = False,
          progress: Progress | None = None, checkpoint_extra: dict[str, Any] | None = None,
          patience: int | None = None, fusion_weights: dict[str, float] | None = None) -> TrainResult:
    """Train on loaded data; with `run_dir`, write checkpoints and metrics.jsonl there, and with
    `resume` continue from its last.pt. `patience`: stop once val top-1 has not improved for that many
    epochs (early stopping; `--select` scores its inner runs this way). `progress` gets each epoch as a
    task of batches, finished with its line (`epoch_line`) and its record as `item`. `fusion_weights`: a
    late fusion's stream weights (pipeline.training.fusion; equal when not given)."""
    cfg = cfg.resolved()
    emit = emitter(progress)
    notes = data_notes(data)
    for note in notes:
        emit(Note(note))
    device = pick_device(cfg.device)
    amp, amp_note = amp_on(device, cfg.amp)
    if amp_note:
        emit(Note(amp_note))
    frame_shapes = {s: d.frame_shape for s, d in data.train.streams.items()}
    spec = model_spec(cfg, num_classes=len(data.classes), frame_shapes=frame_shapes)
    if fusion_weights:
        spec["weights"] = dict(fusion_weights)

    torch.manual_seed(cfg.seed)
    model = build_model(spec).to(device)
    complexity = model_complexity(model, spec)
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    schedule = SCHEDULES[cfg.schedule](optimizer, cfg)
    scaler, dtype = grad_scaler(device, amp), amp_dtype(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_src = make_source(data.train, device=device, num_segments=cfg.segments, stats=data.stats,
                            max_batch=cfg.batch_size)
    val_src = make_source(data.val, device=device, num_segments=cfg.segments, stats=data.stats,
                          max_batch=cfg.eval_batch_size)
    views = num_views(data.val)

    state = {"epoch": 0, "history": [], "best_top1": -1.0, "best_epoch": 0, "train_seconds": 0.0,
             "step_seconds": 0.0, "samples": 0, "stopped": ""}
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and resume and (run_dir / "last.pt").is_file():
        state = _restore(run_dir / "last.pt", cfg, model, optimizer, schedule, scaler, generator)
        emit(Note(f"resuming {run_dir} after epoch {state['epoch']}"))
    extra = dict(checkpoint_extra or {})
    stats_tensors = {s: {"mean": torch.as_tensor(m), "std": torch.as_tensor(v)} for s, (m, v) in data.stats.items()}

    while state["epoch"] < cfg.epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        schedule.start_epoch(epoch - 1)
        lr = optimizer.param_groups[0]["lr"]
        plans = train_plans(len(train_src), cfg.batch_size, cfg.segments, generator)
        task = f"epoch {epoch}/{cfg.epochs}"
        emit(Started(task, total=len(plans), unit="batch", transient=True))
        model.train()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device)
        seen = 0
        for x, y in iterate_batches(train_src, plans):
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp):
                per_stream = model.stream_logits(x)
                loss = sum(F.cross_entropy(out.float(), y) for out in per_stream.values()) / len(per_stream)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                per_stream = {s: o.float() for s, o in per_stream.items()}
                fused = model.fuse(per_stream) if spec["fusion"] == "late" else torch.stack(list(per_stream.values())).mean(0)
                hits += (fused.argmax(1) == y).sum()
                loss_sum += loss.detach() * len(y)
            seen += len(y)
            emit(Advanced(task, amounts={"samples": len(y)}))
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the steps' time, not just the time to queue them
        step_seconds = time.perf_counter() - started
        if not math.isfinite(float(loss_sum)):  # diverged: say so now rather than train on NaN weights
            hint = "train without --amp (bf16), or " if amp else ""
            raise RunError(f"training diverged: the loss is {float(loss_sum)} in epoch {epoch}; "
                           f"{hint}lower the learning rate (--lr, now {cfg.lr:g})")
        val = evaluate(model, val_src, views=views, batch_size=cfg.eval_batch_size, amp=amp)
        state["stopped"] = schedule.end_epoch(val["loss"])
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, "lr": lr, "train_loss": float(loss_sum) / max(seen, 1),
                  "train_top1": float(hits) / max(seen, 1), "val_loss": val["loss"], "val_top1": val["top1"],
                  "val_top5": val["top5"], "val_mean_class_acc": val["mean_class_acc"], "seconds": seconds,
                  "samples_per_second": seen / step_seconds if step_seconds > 0 else 0.0}
        state["epoch"] = epoch
        state["history"].append(record)
        state["train_seconds"] += seconds
        state["step_seconds"] += step_seconds
        state["samples"] += seen
        improved = val["top1"] > state["best_top1"]
        if improved:
            state["best_top1"], state["best_epoch"] = val["top1"], epoch
        if patience and not state["stopped"] and epoch - state["best_epoch"] >= patience:
            state["stopped"] = f"val top-1 did not improve for {patience} epochs"
        if run_dir is not None:
            if improved:
                save_checkpoint({"format": CHECKPOINT_FORMAT, "kind": "best", "spec": spec, "model": model.state_dict(),
                                 "classes": list(data.classes), "epoch": epoch, "val_top1": val["top1"],
                                 "segments": cfg.segments, "stats": stats_tensors, **extra}, run_dir / "checkpoint.pt")
            _save_last(run_dir / "last.pt", cfg, state, model, optimizer, schedule, scaler, generator)
            write_jsonl(run_dir / "metrics.jsonl", state["history"])
        line = epoch_line(record, state["stopped"], f"{record['samples_per_second']:.0f} samples/s")
        emit(Finished(task, summary=line, item=record))

    if run_dir is not None:
        write_jsonl(run_dir / "metrics.jsonl", state["history"])  # also after a kill between last.pt and it
    if run_dir is not None and (run_dir / "checkpoint.pt").is_file():
        model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", map_location=device)["model"])
    best = evaluate(model, val_src, views=views, batch_size=cfg.eval_batch_size, amp=amp)
    collapse = collapse_notes(state["history"], data.train.labels, len(data.classes), best["confusion"], data.classes)
    for note in collapse:
        emit(Note(note))
    if hasattr(train_src, "close"):
        train_src.close()
    if hasattr(val_src, "close"):
        val_src.close()
    return TrainResult(
        model=model, spec=spec, history=state["history"], best_epoch=state["best_epoch"], val=best,
        complexity=complexity, epochs=state["epoch"], stopped=state["stopped"] or f"reached {cfg.epochs} epochs",
        train_seconds=state["train_seconds"],
        samples_per_second=state["samples"] / state["step_seconds"] if state["step_seconds"] else 0.0,
        notes=notes + collapse, collapsed=bool(collapse),
    )


# ---- last.pt: everything needed to continue ------------------------------------------------------


def save_last_checkpoint(path: Path, cfg, state, model, optimizer, schedule, scaler, *, kind: str,
                         **extra: Any) -> None:
    """last.pt of a train-head (`kind` "last") or finetune ("finetune-last") run: the loop's state and all
    that changes as it steps, tagged with the config identity so that a resume can refuse another config."""
    save_checkpoint({
        "format": CHECKPOINT_FORMAT, "kind": kind, "identity": identity(cfg), "state": state,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": dict(schedule.state),
        "scaler": scaler.state_dict(), **extra,
    }, path)


def load_last_checkpoint(path: Path, cfg, model, optimizer, schedule, scaler, *, kind: str,
                         name: str) -> dict[str, Any]:
    """Load a `save_last_checkpoint` file into model, optimizer, schedule and scaler; the whole payload.

    Refused unless it is of `kind` (called `name` in the error) and was written by the same config.
    """
    saved = load_checkpoint(path)
    if saved.get("kind") != kind:
        raise RunError(f"{path}: not a {name} checkpoint")
    check_checkpoint(path, saved["identity"], cfg)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.state.update(saved["schedule"])
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    return saved


def _save_last(path: Path, cfg, state, model, optimizer, schedule, scaler, generator) -> None:
    rng = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_last_checkpoint(path, cfg, state, model, optimizer, schedule, scaler, kind="last", rng=rng)


def _restore(path: Path, cfg, model, optimizer, schedule, scaler, generator) -> dict[str, Any]:
    saved = load_last_checkpoint(path, cfg, model, optimizer, schedule, scaler, kind="last", name="last.pt")
    torch.set_rng_state(saved["rng"]["torch"])
    generator.set_state(saved["rng"]["data"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return dict(saved["state"])


def write_jsonl(path: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl, replaced atomically (a kill mid-write leaves the previous log)."""
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    tmp.replace(path)
