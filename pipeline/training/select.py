"""`--select`: choose a head's recipe on the user's own training data, never on the split reported.

The built-in recipes (pipeline.heads.recipes) were chosen on development sets; on other data a head
may want another learning rate, length, dropout, projection width or temporal centring. `select`
holds out an inner split of the *training* split (a stratified share of its videos, drawn from the
run's seed; whole groups of the manifest's `group` column, so near-duplicates never sit on both sides), trains candidate recipes on the rest, scores each on the inner split, and returns the
resolved config with the best point swapped in (`dataclasses.replace`); the caller retrains that on
the whole training split and reports it on val as usual.

The search is greedy, one axis at a time from the resolved recipe (so it is 5-8 short runs, not a
grid): lr x1/3 and x3, temporal_center 0 / 0.75, dropout 0.5 / 0.8, proj_dim /2 and x2, then epochs
x2; an axis keeps a new value only when it scores better. A point's score is its inner top-1 at its
best epoch, ties going to the lower inner loss. Axes that do not apply to a head are left out (TSN
projects straight to class scores: no proj_dim or centring; spatial heads take no centring).

Cost: each point trains on the ablation's shared features (no copies, `subset`) and stops early on
the inner split (`patience`); the longer length is tried last, so the other axes run at the
recipe's length (tried second, every later point would run twice as long whenever it won:
benchmarks/README.md, "A cheaper search").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.heads import HEADS
from pipeline.heads.recipes import CENTER
from pipeline.progress import Note, Progress, emitter
from pipeline.splits import held_out
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import SplitData
from pipeline.training.loop import TrainData, train

AXES = ("lr", "epochs", "temporal_center", "dropout", "proj_dim")  # what a point is (records, keys)
ORDER = ("lr", "temporal_center", "dropout", "proj_dim", "epochs")  # the order they are searched in
INNER_FRACTION = 0.25  # of each class's training videos, held out for scoring


@dataclass
class Selection:
    chosen: TrainHeadConfig
    points: list[dict[str, Any]] = field(default_factory=list)  # every point tried, in order, with its score
    inner_train: int = 0
    inner_val: int = 0
    seconds: float = 0.0
    order: tuple[str, ...] = ORDER
    early_stop: bool = True

    def record(self) -> dict[str, Any]:
        """What metrics.json and selection.json keep: the search, its scores and the choice."""
        return {"chosen": {k: getattr(self.chosen, k) for k in AXES}, "points": self.points,
                "inner_train_videos": self.inner_train, "inner_val_videos": self.inner_val,
                "inner_fraction": INNER_FRACTION, "order": list(self.order), "early_stop": self.early_stop,
                "seconds": self.seconds}


def axis_values(axis: str, cfg: TrainHeadConfig) -> list[Any]:
    """Values to try on `axis` besides the current one ([] when the axis does not apply to the head)."""
    meta = HEADS.meta(cfg.head)
    to_classes = meta["projects_to"] == "classes"
    if axis == "lr":
        return [float(f"{cfg.lr / 3:.2g}"), float(f"{cfg.lr * 3:.2g}")]  # 2e-3 -> 6.7e-4, 6e-3
    if axis == "epochs":
        return [cfg.epochs * 2]
    if axis == "temporal_center":
        if to_classes or meta["input_kind"] != "pooled":
            return []
        return [0.0 if cfg.temporal_center else CENTER]  # the built-in recipes' centring
    if axis == "dropout":
        return [0.8 if cfg.dropout < 0.65 else 0.5]
    if axis == "proj_dim":
        return [] if to_classes else [v for v in (cfg.proj_dim // 2, cfg.proj_dim * 2) if v >= 8]
    raise ValueError(axis)


def patience(epochs: int) -> int:
    """Epochs without a better inner top-1 after which a point stops: a quarter of its length, at
    least 3 (under the half-cosine lr a run still improves late; its best epoch is its score)."""
    return max(3, math.ceil(epochs / 4))


def inner_split(split: SplitData, *, seed: int, fraction: float = INNER_FRACTION,
                groups: np.ndarray | None = None) -> tuple[SplitData, SplitData]:
    """(inner train, inner val): per class, a seeded draw of `fraction` of its videos (at least one,
    none from a class with a single video) is held out, whole `groups` (one per video, "" for none) at a
    time (`pipeline.splits.held_out`); order within each part as in `split`."""
    held = held_out(split.labels, groups, fraction=fraction, seed=seed)
    if not held.any() or held.all():
        unit = "groups" if groups is not None and any(groups) else "videos"
        raise ConfigError(f"--select needs some class with training {unit} to hold out while keeping one for "
                          f"training; the training split has {len(split)} videos")
    return subset(split, np.flatnonzero(~held), "inner-train"), subset(split, np.flatnonzero(held), "inner-val")


def subset(split: SplitData, index: np.ndarray, name: str) -> SplitData:
    """The videos `index` of `split`; their features stay where they are (offsets into the same arrays)."""
    streams = {s: replace(d, offsets=d.offsets[index].copy(), lengths=d.lengths[index].copy())
               for s, d in split.streams.items()}
    return replace(split, split=name, video_ids=split.video_ids[index], keys=split.keys[index],
                   labels=split.labels[index].copy(), streams=streams, notes=[])


def select(cfg: TrainHeadConfig, data: TrainData, *, progress: Progress | None = None,
           order: tuple[str, ...] = ORDER, early_stop: bool = True, groups: np.ndarray | None = None) -> Selection:
    """Greedy search (module docstring) on an inner split of `data.train` (`groups`: each training video's
    group, kept whole); `cfg` is the starting point.
    `order` and `early_stop` exist for benchmarks/bench_select.py (the search as first built: AXES, False)."""
    cfg = cfg.resolved()
    emit = emitter(progress)
    started = time.perf_counter()
    inner_train, inner_val = inner_split(data.train, seed=cfg.seed, groups=groups)
    inner = TrainData(train=inner_train, val=inner_val, classes=data.classes, stats=data.stats)
    base = replace(cfg, out="", resume=False, overwrite=False)
    points: list[dict[str, Any]] = []
    scores: dict[tuple, tuple[float, float]] = {}

    def score(point: TrainHeadConfig) -> tuple[float, float]:
        key = tuple(getattr(point, a) for a in AXES)
        if key not in scores:
            tick = time.perf_counter()
            result = train(point, inner, patience=patience(point.epochs) if early_stop else None)
            best = max(result.history, key=lambda r: (r["val_top1"], -r["val_loss"]))
            scores[key] = (best["val_top1"], best["val_loss"])
            points.append({**dict(zip(AXES, key)), "inner_top1": best["val_top1"], "inner_loss": best["val_loss"],
                           "best_epoch": best["epoch"], "epochs_run": result.epochs, "collapsed": result.collapsed,
                           "seconds": time.perf_counter() - tick})
            emit(Note(f"select {len(points)}: " + ", ".join(f"{a} {v:g}" for a, v in zip(AXES, key))
                      + f" -> inner top-1 {best['val_top1']:.1%} (epoch {best['epoch']})"))
        return scores[key]

    current, current_score = base, score(base)
    for axis in order:
        for value in axis_values(axis, current):
            candidate = replace(current, **{axis: value})
            candidate_score = score(candidate)
            if _better(candidate_score, current_score):  # the axis keeps its best value
                current, current_score = candidate, candidate_score
    chosen = replace(cfg, **{a: getattr(current, a) for a in AXES})
    emit(Note("select chose " + ", ".join(f"{a} {getattr(chosen, a):g}" for a in AXES)
              + f" (inner top-1 {current_score[0]:.1%}; {len(points)} points on {len(inner_train)} + "
                f"{len(inner_val)} videos)"))
    return Selection(chosen=chosen, points=points, inner_train=len(inner_train), inner_val=len(inner_val),
                     seconds=time.perf_counter() - started, order=tuple(order), early_stop=early_stop)


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Higher top-1, or the same top-1 at a lower loss."""
    if not math.isclose(a[0], b[0], abs_tol=1e-9):
        return a[0] > b[0]
    return a[1] < b[1]
