"""Run directories and the store a run was trained on.

A run dir holds config.yaml, checkpoint.pt (best val top-1), last.pt, metrics.jsonl, metrics.json,
curves.png and confusion.png. A run records its store's signature (classes, extract config hash,
per-stream frame shape and views); evaluation, prediction and resuming refuse a store that differs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import config_to_dict, read_yaml
from pipeline.errors import RunError, StoreError
from pipeline.store import FeatureStore
from pipeline.training.config import STREAM_ARRAYS, TrainHeadConfig
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
    """Check or clear the run dir; returns the config to train with and whether an earlier run of it
    should be continued.

    Same config: continue (re-running a command resumes). A recipe field the user did not give and the
    run holds another value of (a run made before a recipe changed, or through another entry point
    with the other recipe): the run continues as it was made, with its own values. Any other
    difference is refused unless --overwrite, which deletes the run's files (only those). --resume
    insists there is a run.
    """
    run_dir = Path(cfg.out)
    existing = run_dir / "config.yaml"
    if cfg.overwrite:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for path in run_dir.glob("eval_*"):
            path.unlink()
        remove_event_files(run_dir)
        return cfg, False
    if not existing.is_file():
        if cfg.resume:
            raise RunError(f"{run_dir}: nothing to resume (no config.yaml); drop --resume to start a run")
        foreign = [p.name for p in run_dir.iterdir() if p.name not in RUN_FILES] if run_dir.is_dir() else []
        if foreign:  # our own files alone are a start that failed before config.yaml: fine to reuse
            raise RunError(f"{run_dir}: exists and is not a train-head run (holds {foreign[0]!r}); pick another -o")
        return cfg, False
    old = read_run_config(run_dir)
    kept = {k: getattr(old, k) for k in recipe_fields_to_keep(cfg, old)}
    if kept:
        cfg = replace(cfg, **kept)
    return cfg, resume_same_config(run_dir, cfg, old)


def recipe_fields_to_keep(cfg, old) -> list[str]:
    """Recipe fields the user left to the recipe (`cfg.given` says which they set) whose value differs
    from the run's: the run's own values are what continuing it means."""
    from pipeline.heads.recipes import RECIPE_FIELDS

    given = getattr(cfg, "given", RECIPE_FIELDS)
    return [k for k in RECIPE_FIELDS if k not in given and getattr(cfg, k) != getattr(old, k)]


def resume_same_config(run_dir: Path, cfg, old, *, what: str = "run") -> bool:
    """`old` made the run in run_dir (train-head's or finetune's config): refuse it unless `cfg` has the
    same identity; True when its last.pt lets the run continue (--resume insists on one)."""
    mine, theirs = _plain(cfg.identity()), _plain(old.identity())
    if mine != theirs:
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        values = "; ".join(f"{k} {theirs.get(k)!r} there, {mine[k]!r} here" for k in diff[:4])
        raise RunError(f"{run_dir}: holds a {what} with a different config (differs in: {', '.join(diff)}; "
                       f"{values}); use another -o or --overwrite")
    resumable = (run_dir / "last.pt").is_file()
    if cfg.resume and not resumable:
        raise RunError(f"{run_dir}: nothing to resume (no last.pt); drop --resume to start the run")
    return resumable


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(config_to_dict(value)))
