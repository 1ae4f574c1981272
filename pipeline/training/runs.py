"""Run directories and the store a run was trained on.

A run dir holds config.yaml, checkpoint.pt (best val top-1), last.pt, metrics.jsonl, metrics.json,
curves.png and confusion.png. A run records its store's signature (classes, extract config hash,
per-stream frame shape and views); evaluation, prediction and resuming refuse a store that differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import read_yaml
from pipeline.errors import RunError, StoreError
from pipeline.store import FeatureStore
from pipeline.training.config import STREAM_ARRAYS, TrainHeadConfig
from pipeline.training.identity import check_same_run, continued
from pipeline.training.tensorboard_events import remove_event_files

SELECTION_FILE = "selection.json"  # --select: what was searched and chosen (pipeline.training.select)
FUSION_FILE = "fusion.json"  # late fusion: the streams' weights and how they were chosen (pipeline.training.fusion)
RUN_FILES = ("config.yaml", "store.json", "checkpoint.pt", "last.pt", "metrics.jsonl", "metrics.json",
             "curves.png", "confusion.png", "stats.json", SELECTION_FILE, FUSION_FILE)


def store_signature(store: FeatureStore, streams: tuple[str, ...], *, pooled: bool, split: str = "train") -> dict[str, Any]:
    """What a head depends on: classes, extract config hash, and each stream's views and frame shape
    (as the head sees it), read from the split's first complete video."""
    index = store.index()
    ok = (index["status"] == "complete") & (index["split"] == split)
    if not ok.any():
        ok = index["status"] == "complete"
    if not ok.any():
        raise StoreError(f"{store.url}: the store holds no complete videos")
    key = str(index["key"][int(np.argmax(ok))])
    group = store.root["videos"][key]
    shapes = {}
    for stream in streams:
        name = STREAM_ARRAYS[stream]
        if name not in group:
            hint = " (it was extracted without --flow-features; use --modality rgb)" if stream == "flow" else ""
            raise StoreError(f"{store.url}: the {stream} stream needs {name!r} arrays but the store has none{hint}")
        shape = tuple(int(v) for v in group[name].shape)
        if not pooled and len(shape) != 5:
            raise StoreError(f"{store.url}: this head needs spatial feature maps but {name!r} holds pooled "
                             f"vectors {shape}; extract with --features spatial or choose a pooled head")
        shapes[stream] = {"views": shape[0], "frame_shape": list(shape[2:3] if pooled else shape[2:])}
    return {"classes": store.classes, "config_hash": store.meta.get("config_hash", ""), "streams": shapes}


def check_signature(saved: dict[str, Any], current: dict[str, Any], *, store_url: str, run: str | Path) -> None:
    if saved["classes"] != current["classes"]:
        a, b = saved["classes"], current["classes"]
        detail = f"{len(a)} vs {len(b)} classes" if len(a) != len(b) else \
            f"class {next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)} differs"
        raise StoreError(f"{store_url}: classes differ from those run {run} was trained on ({detail})")
    for stream, want in saved["streams"].items():
        have = current["streams"].get(stream)
        if have is None or have["frame_shape"] != want["frame_shape"]:
            got = have["frame_shape"] if have else "none"
            raise StoreError(f"{store_url}: {stream} features have shape {got}; run {run} was trained on "
                             f"{want['frame_shape']}")
    if saved.get("config_hash") and current.get("config_hash") and saved["config_hash"] != current["config_hash"]:
        raise StoreError(f"{store_url}: made by a different extract config (hash {current['config_hash']}) than "
                         f"the store run {run} was trained on ({saved['config_hash']})")


def check_recorded_signature(run_dir: str | Path, signature: dict[str, Any], *, store_url: str) -> None:
    """A continued run (store.json present) refuses a store whose classes or features differ."""
    path = Path(run_dir) / "store.json"
    if path.is_file():
        check_signature(json.loads(path.read_text()), signature, store_url=store_url, run=run_dir)


def record_signature(run_dir: str | Path, signature: dict[str, Any]) -> None:
    path = Path(run_dir) / "store.json"
    if not path.is_file():
        path.write_text(json.dumps(signature, indent=1))


def read_run_config(run_dir: str | Path) -> TrainHeadConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a train-head run (no config.yaml)")
    return TrainHeadConfig.from_saved(read_yaml(path), source=str(path))


def prepare_run_dir(cfg: TrainHeadConfig) -> tuple[TrainHeadConfig, bool]:
    """Check or clear the run dir (`saved_run`); returns the config to train with (resolved) and
    whether an earlier run of it should be continued: the same run (pipeline.training.identity: the
    recipe fields the user did not give take the run's values) continues, any other is refused."""
    old = saved_run(cfg, (*RUN_FILES, "eval_*"), read_run_config, what="train-head run")
    if old is None:
        return cfg.resolved(), False
    cfg = continued(cfg, old)
    return cfg, resume_same_config(Path(cfg.out), cfg, old)


def saved_run(cfg, files: tuple[str, ...], read: Callable[[Path], Any], *, what: str) -> Any:
    """The config of the run in `cfg.out` (`read(run_dir)`), or None to start one. --overwrite deletes
    the run's `files` (names or globs; only those) and event files; --resume insists there is a run;
    a folder holding other files is refused (ours alone are a start that failed before config.yaml)."""
    run_dir = Path(cfg.out)
    if cfg.overwrite:
        for path in (p for pattern in files for p in run_dir.glob(pattern)):
            path.unlink()
        remove_event_files(run_dir)
        return None
    if not (run_dir / "config.yaml").is_file():
        if cfg.resume:
            raise RunError(f"{run_dir}: nothing to resume (no config.yaml); drop --resume to start a run")
        foreign = [p.name for p in run_dir.iterdir() if not any(fnmatch(p.name, f) for f in files)] \
            if run_dir.is_dir() else []
        if foreign:
            raise RunError(f"{run_dir}: exists and is not a {what} (holds {foreign[0]!r}); pick another -o")
        return None
    return read(run_dir)


def resume_same_config(run_dir: Path, cfg, old, *, what: str = "run") -> bool:
    """`old` made the run in run_dir (train-head's or finetune's config): refuse it unless `cfg` has the
    same identity; True when its last.pt lets the run continue (--resume insists on one)."""
    check_same_run(run_dir, cfg, old, what=what)
    resumable = (run_dir / "last.pt").is_file()
    if cfg.resume and not resumable:
        raise RunError(f"{run_dir}: nothing to resume (no last.pt); drop --resume to start the run")
    return resumable
