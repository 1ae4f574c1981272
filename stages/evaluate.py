"""Evaluate a trained run on a split: `run(cfg) -> EvaluateResult`.

Loads checkpoint.pt (weights_only), checks the store against the run's signature, averages the
logits of all cached views, and writes eval_<split>.json (top-1, top-5, mean class accuracy and
per-class accuracy with support) and eval_<split>_confusion.png into the run dir. With `out`, also
the per-video predictions and per-class / confusion tables (pipeline.training.predictions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import DEVICE, SKIP_DAMAGED, STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError
from pipeline.progress import Progress


@dataclass(frozen=True)
class EvaluateConfig:
    run: str = arg("", "Run directory from `stpipe train-head`.", required=True)
    split: str = arg("val", "Split to evaluate (val, test, train).")
    store: str = arg("", "Another store made by the same extract config (default: the run's).", short="-s")
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    checkpoint: str = arg("checkpoint.pt", "checkpoint.pt (best) or last.pt.")
    device: str = arg("auto", DEVICE)
    batch_size: int = arg(256, "Videos per forward.")
    out: str = arg("", "Also write per-video predictions to this .csv or .json, with per-class accuracy and the "
                       "confusion matrix (CSV and PNG) beside it.")
    top_k: int = arg(5, "Classes per video in --out.")
    skip_damaged: bool = arg(False, SKIP_DAMAGED, negatable=False)

    def __post_init__(self) -> None:
        if not self.run:
            raise ConfigError("evaluate needs a run dir (--run)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.split or "/" in self.split or "\\" in self.split or self.split.startswith("."):
            # it names the report file (eval_<split>.json): a path here could point outside the run dir
            raise ConfigError(f"--split {self.split!r}: expected a split name such as val or test")
        if self.out:
            from pipeline.training.predictions import check_output

            check_output(self.out)
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")


@dataclass
class EvaluateResult:
    split: str
    videos: int
    top1: float
    top5: float
    mean_class_acc: float
    loss: float
    per_class: list[dict[str, Any]]
    report: Path
    notes: list[str]
    outputs: list[Path] = field(default_factory=list)  # `out` and the files beside it


def run(cfg: EvaluateConfig, progress: Progress | None = None) -> EvaluateResult:
    """`progress`: loading the split (pipeline.progress)."""
    # here, not at the top: the CLI reads EvaluateConfig's fields without importing torch
    from pipeline.cpus import apply_threads
    from pipeline.device import amp_on, pick_device
    from pipeline.training.data import memory_budget_bytes
    from pipeline.training.features import load_features
    from pipeline.training.loop import logit_metrics, make_source, num_views, predict
    from pipeline.training.predictions import prediction_rows, write_outputs
    from pipeline.training.reports import plot_confusion
    from pipeline.training.trained import TrainedRun

    apply_threads()
    run_dir = Path(cfg.run)
    trained = TrainedRun.open(run_dir, cfg.checkpoint)
    train_cfg = trained.config
    store_url = cfg.store or train_cfg.store
    store = trained.open_store(cfg.store, cfg.storage_options)
    signature = trained.check(store, split=cfg.split, url=store_url)
    device = pick_device(cfg.device)
    use = (train_cfg.streams, trained.pooled)
    split = load_features(store, uses=[use], splits=(cfg.split,), signatures={use: signature},
                          memory_budget_bytes=memory_budget_bytes(train_cfg.memory_budget_gb, device),
                          storage_options=cfg.storage_options or train_cfg.storage_options,
                          skip_damaged=cfg.skip_damaged, progress=progress).split(cfg.split, *use)
    source = make_source(split, device=device, num_segments=trained.segments, stats=trained.stats(),
                         max_batch=cfg.batch_size)
    logits, labels = predict(trained.model(device), source, views=num_views(split), batch_size=cfg.batch_size,
                             amp=amp_on(device, train_cfg.amp)[0])
    metrics = logit_metrics(logits, labels)
    if hasattr(source, "close"):
        source.close()
    classes = trained.classes
    support = metrics["confusion"].sum(axis=1)
    per_class = [{"class": name, "accuracy": None if acc != acc else float(acc), "support": int(n)}
                 for name, acc, n in zip(classes, metrics["per_class"], support)]
    report = run_dir / f"eval_{cfg.split}.json"
    summary = {"split": cfg.split, "store": store_url, "checkpoint": cfg.checkpoint, "videos": len(split),
               "top1": metrics["top1"], "top5": metrics["top5"], "mean_class_acc": metrics["mean_class_acc"],
               "loss": metrics["loss"], "per_class": per_class, "notes": split.notes}
    report.write_text(json.dumps(summary, indent=1))
    title = f"{train_cfg.head}: {cfg.split}"
    plot_confusion(metrics["confusion"], classes, run_dir / f"eval_{cfg.split}_confusion.png", title=title)
    outputs = []
    if cfg.out:
        rows = prediction_rows(split.video_ids.tolist(), labels, logits, classes, cfg.top_k)
        outputs = write_outputs(cfg.out, rows, per_class, metrics["confusion"], classes, title=title)
    return EvaluateResult(split=cfg.split, videos=len(split), top1=metrics["top1"], top5=metrics["top5"],
                          mean_class_acc=metrics["mean_class_acc"], loss=metrics["loss"], per_class=per_class,
                          report=report, notes=list(split.notes), outputs=outputs)
