"""Late fusion's stream weights, chosen on the training videos only (never on the split reported).

Equal averaging let a weak stream pull a strong one down (TSN on real footage: rgb+flow 70.9 vs flow
alone 77.0, benchmarks/README.md). `choose_weights` holds out the inner split `--select` uses (a
seeded share of each class's training videos, whole `groups` at a time when given: select.inner_split;
the caller decides, pipeline.training.session), trains the
run's two heads on the rest, and scores a grid of rgb:flow weights on the held-out part from the
per-stream logits of that one model. The grid spans flow alone to rgb alone, so a useless stream
can be switched off; the best inner top-1 wins, ties going to the lower inner loss, then to the
weights nearest TSN's rgb:flow = 1:1.5 (`START`). The run then trains on all its training videos and
its LateFusion applies the weights (saved in the checkpoint's spec, so evaluate and predict use them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.progress import Note, Progress, emitter
from pipeline.training.config import TrainHeadConfig
from pipeline.training.loop import TrainData, make_source, num_views, predict, train

START = {"rgb": 1.0, "flow": 1.5}  # TSN (Wang et al. 2016, sec. 4.2)
GRID = tuple(i / 10 for i in range(11))  # the first stream's share of the weight: 0 = second stream alone


def choose_weights(cfg: TrainHeadConfig, data: TrainData, *, groups: np.ndarray | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """The record of the choice: "weights" ({stream: weight}, summing to 1), the grid's inner scores,
    and the inner split's sizes. Training data too small to hold any videos out: TSN's START, said so."""
    from pipeline.training.select import inner_split

    emit = emitter(progress)
    first, second = cfg.streams
    start = {s: START[s] / sum(START.values()) for s in cfg.streams}
    try:
        inner_train, inner_val = inner_split(data.train, seed=cfg.seed, groups=groups)
    except ConfigError:
        emit(Note(f"late fusion: too few training videos to hold some out; TSN's weights {first}:{second} = 1:1.5"))
        return {"weights": start, "grid": [], "inner_train_videos": 0, "inner_val_videos": 0}
    inner = TrainData(train=inner_train, val=inner_val, classes=data.classes, stats=data.stats)
    result = train(replace(cfg, out="", resume=False, overwrite=False), inner, fusion_weights=start)
    source = make_source(inner_val, device=next(result.model.parameters()).device, num_segments=cfg.segments,
                         stats=data.stats, max_batch=cfg.eval_batch_size)
    logits = {}
    for stream in cfg.streams:  # one stream's logits: that stream at full weight
        result.model.set_weights({s: float(s == stream) for s in cfg.streams})
        logits[stream], labels = predict(result.model, source, views=num_views(inner_val),
                                         batch_size=cfg.eval_batch_size)
    if hasattr(source, "close"):
        source.close()
    grid = []
    for share in GRID:
        fused = share * logits[first] + (1 - share) * logits[second]
        grid.append({first: share, second: round(1 - share, 6),
                     "inner_top1": float((fused.argmax(1) == labels).float().mean()),
                     "inner_loss": float(F.cross_entropy(fused, labels))})
    best = max(grid, key=lambda p: (p["inner_top1"], -p["inner_loss"], -abs(p[first] - start[first])))
    weights = {s: best[s] for s in cfg.streams}
    emit(Note(f"late fusion: weights {first} {weights[first]:g}, {second} {weights[second]:g} (inner top-1 "
         f"{best['inner_top1']:.1%}; {first} alone {grid[-1]['inner_top1']:.1%}, {second} alone "
         f"{grid[0]['inner_top1']:.1%}; {len(inner_train)} + {len(inner_val)} training videos)"))
    return {"weights": weights, "grid": grid, "inner_train_videos": len(inner_train),
            "inner_val_videos": len(inner_val)}
