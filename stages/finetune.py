"""Stage three: fine-tune backbone(s) and head end to end from the videos. `run(cfg) -> FinetuneResult`.

Starts from a train-head run (its head, its store's backbone record and cached flow), trains on
decoded frames in-process or on Ray Train, and writes the run dir: config.yaml, checkpoint.pt
(best val top-1: the whole network), last.pt, metrics.jsonl, metrics.json, curves.png,
confusion.png, and per stream a plain per-frame backbone file (`backbone.pt` for appearance,
`flow_backbone.pt` for motion) with a `.json` sidecar, which `stpipe extract --backbone-checkpoint`
loads to re-cache features so that stage two benefits; TensorBoard event files of the curves too,
when tensorboard is installed. Never prints; progress goes to
`progress(event)` as pipeline.progress events (each epoch's batches and its line, notes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.config import from_dict, read_yaml, save_config
from pipeline.device import pick_device
from pipeline.errors import ConfigError, RunError, full_disk_as_error
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.loop import Dist, train_worker
from pipeline.finetune.model import build_finetune_model
from pipeline.finetune.source import Setup, prepare
from pipeline.progress import Progress
from pipeline.training.model import load_checkpoint, torch_bytes
from pipeline.training.reports import plot_confusion, plot_curves
from pipeline.training.runs import resume_same_config, saved_run
from pipeline.training.tensorboard_events import epoch_curves

RUN_FILES = ("config.yaml", "checkpoint.pt", "last.pt", "metrics.jsonl", "metrics.json", "curves.png", "confusion.png",
             "backbone.pt", "backbone.json", "flow_backbone.pt", "flow_backbone.json")
BACKBONE_FILES = {"rgb": "backbone", "flow": "flow_backbone"}


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict[str, Any]
    resumed: bool
    backbone_files: dict[str, Path]  # {stream: .pt}


def run(cfg: FinetuneConfig, *, progress: Progress | None = None) -> FinetuneResult:
    with full_disk_as_error(cfg.out):
        return _run(cfg, progress)


def _run(cfg: FinetuneConfig, progress: Progress | None) -> FinetuneResult:
    shown = Path(cfg.out)  # the run dir as the user wrote it, for messages
    # once, on the driver: Ray Train workers run in a trial folder, not in this working directory
    cfg = cfg.with_absolute_paths()
    run_dir = Path(cfg.out)
    resumed = prepare_run_dir(cfg)
    setup = prepare(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    with epoch_curves(run_dir, progress) as progress:  # TensorBoard event files, when it is installed
        if cfg.use_ray:
            from pipeline.distributed import run_finetune

            build_finetune_model(setup)  # a network that cannot be built fails here in one line, not in N workers
            run_finetune(setup, run_dir=run_dir, progress=progress)
        else:
            if cfg.workers > 1:
                raise ConfigError("--workers > 1 needs Ray Train; drop --executor local")
            train_worker(setup, run_dir=run_dir, dist=Dist(device=pick_device(cfg.device)), progress=progress)
    return replace(finish(setup, run_dir, resumed=resumed), run_dir=shown)


def finish(setup: Setup, run_dir: Path, *, resumed: bool) -> FinetuneResult:
    """Export the best network's backbones, write metrics.json and the plots."""
    cfg = setup.cfg
    state = load_checkpoint(run_dir / "last.pt")["state"]
    best = load_checkpoint(run_dir / "checkpoint.pt")
    model = build_finetune_model(setup)
    model.load_state_dict(best["model"])
    files = {}
    for stream in setup.streams:
        backbone = model.export_backbone(stream)
        files[stream] = run_dir / f"{BACKBONE_FILES[stream]}.pt"
        files[stream].write_bytes(torch_bytes(backbone.state_dict()))
        sidecar = {"name": backbone.meta["name"], "features": backbone.meta["features"],
                   "resize_size": backbone.meta["resize_size"], "crop_size": backbone.meta["input_size"][0],
                   "in_channels": backbone.meta["in_channels"], "modality": backbone.meta.get("modality", "rgb"),
                   "flow_stack": backbone.meta.get("flow_stack"), "flow_bound": backbone.meta.get("flow_bound"),
                   "started_from": backbone.meta["weights"], "fusion": cfg.fusion, "run": str(run_dir)}
        files[stream].with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    history = state["history"]
    best_record = next((r for r in history if r["epoch"] == state["best_epoch"]), state["start"])
    notes = list(setup.notes)
    if history and state["best_epoch"] == 0:
        best_seen = max(r["val_top1"] for r in history)
        notes.append(f"fine-tuning never beat its start (val top-1 {state['start']['val_top1']:.2%} before, at best "
                     f"{best_seen:.2%} after an epoch): the checkpoint and backbones are the starting network; "
                     "try a lower --lr, or more epochs")
    head_only = _head_only_top1(cfg.run)
    metrics = {
        "val_top1": best_record.get("val_top1"), "val_top5": best_record.get("val_top5"),
        "val_mean_class_acc": best_record.get("val_mean_class_acc"), "val_loss": best_record.get("val_loss"),
        "head_only_val_top1": head_only, "start_val_top1": state["start"]["val_top1"], "best_epoch": state["best_epoch"], "epochs": state["epoch"],
        "stopped": state["stopped"] or f"reached {cfg.epochs} epochs", "streams": list(setup.streams),
        "fusion": cfg.fusion, "segments": setup.segments, "workers": cfg.workers, "batch_size": cfg.batch_size,
        "micro_batch": state.get("sizing"),  # as the last (re)start sized it: micro-batch, accumulation, memory
        "train_seconds": state["train_seconds"],
        "frames_per_second": state["frames"] / state["step_seconds"] if state["step_seconds"] else 0.0,
        "frames_per_cpu_second": state["frames"] / state["cpu_seconds"] if state.get("cpu_seconds") else 0.0,
        "train_videos": len(setup.train), "val_videos": len(setup.val),
        "failed_videos": len(state["failures"]), "failures": state["failures"], "notes": notes,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    title = f"finetune ({'+'.join(setup.streams)}, {cfg.fusion}), {setup.segments} segments"
    if history:
        plot_curves(history, run_dir / "curves.png", title=title)
    plot_confusion(best["val_confusion"].numpy(), setup.classes, run_dir / "confusion.png",
                   title=f"{title}: {setup.val_split} (best epoch {best['epoch']})")
    return FinetuneResult(run_dir=run_dir, metrics=metrics, resumed=resumed, backbone_files=files)


def _head_only_top1(run: str) -> float | None:
    path = Path(run) / "metrics.json"
    try:
        return float(json.loads(path.read_text())["val_top1"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def prepare_run_dir(cfg: FinetuneConfig) -> bool:
    """Check or clear the run dir (train-head's rules); True when an earlier run is continued."""
    old = saved_run(cfg, RUN_FILES, _read_config, what="finetune run")
    # a run saved before paths were made absolute holds the relative --run: from here, the same run
    return old is not None and resume_same_config(Path(cfg.out), cfg, old.with_absolute_paths(), what="finetune run")


def _read_config(run_dir: Path) -> FinetuneConfig:
    path = run_dir / "config.yaml"
    try:
        return from_dict(FinetuneConfig, FinetuneConfig.saved_values(read_yaml(path)), source=str(path))
    except ConfigError:
        raise RunError(f"{run_dir}: holds another kind of run (its config.yaml is not a finetune config); "
                       "pick another -o") from None
