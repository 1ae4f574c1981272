"""A train-head run: `run_head(cfg) -> TrainHeadResult` (stages/train_head.py and every ablation trial).

Writes the run dir: config.yaml, checkpoint.pt (best val top-1), last.pt, metrics.jsonl (per epoch),
metrics.json (final), curves.png, confusion.png. Progress and notes go to `progress(event)` as
pipeline.progress events; this module never prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.config import save_config
from pipeline.cpus import apply_threads
from pipeline.device import pick_device
from pipeline.errors import ConfigError
from pipeline.progress import Progress
from pipeline.splits import groups_of, index_leak
from pipeline.store import FeatureStore
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import memory_budget_bytes
from pipeline.training.features import load_features
from pipeline.training.identity import differences
from pipeline.training.identity import identity as run_identity
from pipeline.training.loop import TrainData, TrainResult, train
from pipeline.training.model import check_buildable, head_input_kind
from pipeline.training.reports import plot_confusion, plot_curves
from pipeline.training.runs import (
    FUSION_FILE,
    SELECTION_FILE,
    check_recorded_signature,
    prepare_run_dir,
    record_signature,
    store_signature,
)


@dataclass
class TrainHeadResult:
    run_dir: Path
    metrics: dict[str, Any]
    train: TrainResult
    resumed: bool


def load_data(cfg: TrainHeadConfig, store: FeatureStore, *, run_dir: str | Path | None = None,
              progress: Progress | None = None, signature: dict[str, Any] | None = None
              ) -> tuple[TrainData, dict[str, Any]]:
    """Store -> TrainData (train and val splits in memory or streamed, stats when asked) + signature,
    through stage two's one loader (`pipeline.training.features`)."""
    pooled = head_input_kind(cfg.head) == "pooled"
    budget = memory_budget_bytes(cfg.memory_budget_gb, pick_device(cfg.device))
    found = load_features(store, uses=[(cfg.streams, pooled)], splits=("train", cfg.val_split),
                          memory_budget_bytes=budget, storage_options=cfg.storage_options,
                          standardize=cfg.standardize, stats_dir=str(run_dir or Path(cfg.out)),
                          signatures={(cfg.streams, pooled): signature} if signature else None,
                          skip_damaged=cfg.skip_damaged, progress=progress)
    return found.train_data(cfg.streams, pooled), found.signature(cfg.streams, pooled)


def run_head(cfg: TrainHeadConfig, *, progress: Progress | None = None, data: TrainData | None = None,
        signature: dict[str, Any] | None = None, plots: bool = True) -> TrainHeadResult:
    """`data` + `signature`: features already loaded (an ablation shares one copy across trials);
    `plots`: write curves.png and confusion.png."""
    if not cfg.out:
        raise ConfigError("train-head needs an output run dir (-o/--out)")
    started = time.perf_counter()
    run_dir = Path(cfg.out)
    cfg, resume = prepare_run_dir(cfg)  # a run continues with the recipe values it was made with
    store = FeatureStore.open(cfg.store, storage_options=cfg.storage_options or None)
    if signature is None:
        signature = store_signature(store, cfg.streams, pooled=head_input_kind(cfg.head) == "pooled")
    check_buildable(cfg, signature)  # bad head options fail here, before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    check_recorded_signature(run_dir, signature, store_url=cfg.store)  # a continued run refuses another store
    if data is None:  # a standalone run (an ablation's executor sets its trials' threads itself)
        apply_threads()
        data, signature = load_data(cfg, store, run_dir=run_dir, progress=progress, signature=signature)
    # written once the data is in: a start that fails earlier leaves nothing that blocks a corrected re-run
    record_signature(run_dir, signature)
    save_config(cfg, run_dir / "config.yaml")
    load_seconds = time.perf_counter() - started
    selection = _selection(cfg, data, store, run_dir, progress) if cfg.select else None
    trained = selection["config"] if selection else cfg
    late = len(cfg.streams) > 1 and cfg.fusion == "late"
    fusion = _fusion(trained, data, store, run_dir, progress) if late else None
    result = train(trained, data, run_dir=run_dir, resume=resume, progress=progress,
                   checkpoint_extra={"store": signature}, fusion_weights=fusion and fusion["weights"])
    metrics = {
        "val_top1": result.val["top1"], "val_top5": result.val["top5"],
        "val_mean_class_acc": result.val["mean_class_acc"], "val_loss": result.val["loss"],
        "best_epoch": result.best_epoch, "epochs": result.epochs, "stopped": result.stopped,
        **result.complexity,
        "train_seconds": result.train_seconds, "samples_per_second": result.samples_per_second,
        "load_seconds": load_seconds, "head": cfg.head, "segments": cfg.segments, "modality": cfg.modality,
        "train_videos": len(data.train), "val_videos": len(data.val),
        "val_per_class": dict(zip(data.classes, _floats(result.val["per_class"]))),
        "notes": result.notes, "collapsed": result.collapsed,
    }
    if selection:
        metrics["select"] = selection["record"]
    if fusion:
        metrics["fusion"] = fusion
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if plots:
        title = f"{cfg.head}, {cfg.segments} segments, {cfg.modality}"
        if result.history:
            plot_curves(result.history, run_dir / "curves.png", title=title)
        plot_confusion(result.val["confusion"], data.classes, run_dir / "confusion.png",
                       title=f"{title}: val (best epoch {result.best_epoch})")
    return TrainHeadResult(run_dir=run_dir, metrics=metrics, train=result, resumed=resume)


def _selection(cfg: TrainHeadConfig, data: TrainData, store: FeatureStore, run_dir: Path,
               progress: Progress | None) -> dict[str, Any]:
    """--select: the chosen config and the search's record, from selection.json when this run already
    searched (a re-run or resume trains what was chosen), else by searching now."""
    from pipeline.training.select import select

    record = _chosen_once(run_dir / SELECTION_FILE, cfg, lambda: select(
        cfg, data, progress=progress, groups=groups_of(store.index(), data.train.keys)).record())
    return {"config": replace(cfg, **record["chosen"]), "record": record}


def _fusion(cfg: TrainHeadConfig, data: TrainData, store: FeatureStore, run_dir: Path,
            progress: Progress | None) -> dict[str, Any]:
    """Late fusion's stream weights (pipeline.training.fusion), from fusion.json when this run already
    chose them, else chosen now on the training videos.

    The inner split is drawn as the reported split was: whole groups when val keeps train's groups out,
    else per video. A val that shares sources with train rewards the stream that remembers them (rgb);
    whole sources held out judge the streams on unseen ones instead, and chose flow alone where equal
    weights had scored 15 points higher (benchmarks/README.md, issue 34.5)."""
    from pipeline.training.fusion import choose_weights

    index = store.index()
    groups = None if index_leak(index, "train", cfg.val_split) else groups_of(index, data.train.keys)
    return _chosen_once(run_dir / FUSION_FILE, cfg, lambda: choose_weights(cfg, data, groups=groups, progress=progress))


def _chosen_once(path: Path, cfg: TrainHeadConfig, choose) -> dict[str, Any]:
    """What `choose()` records, kept in `path` with the config's identity: a re-run or resume of the same
    config reads it back instead of choosing again."""
    identity = run_identity(cfg)
    if path.is_file():
        saved = json.loads(path.read_text())
        if not differences(saved.get("identity", {}), identity):
            return saved
    record = {"identity": identity, **choose()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return record


def _floats(values) -> list[float | None]:
    return [None if v != v else float(v) for v in values]  # NaN (class absent from val) -> null
