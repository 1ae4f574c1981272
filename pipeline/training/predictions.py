"""A run's per-video predictions on a split, in the files users open elsewhere (`stpipe evaluate --out
FILE`, like mmaction2's `--dump` and TSN's score files):

- FILE, .csv or .json by its suffix: one row per video, `video_id, label, correct` (top-1), then the
  top-k classes with their softmax probabilities, best first (.json: `top: [{class, probability}]`,
  the shape `stpipe predict --json` prints);
- beside it, named after FILE's stem: `_per_class.csv` (class, accuracy, support; accuracy blank for
  a class without videos in the split), `_confusion.csv` (counts, a row per true class, a column per
  predicted class) and `_confusion.png` (rows normalised).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ConfigError
from pipeline.training.reports import plot_confusion

FORMATS = (".csv", ".json")


def check_output(path: str) -> None:
    if Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {path}: expected a .csv or .json file for the per-video predictions")


def prediction_rows(video_ids: Sequence[str], labels: torch.Tensor, logits: torch.Tensor, classes: Sequence[str],
                    top_k: int) -> list[dict[str, Any]]:
    """One dict per video: video_id, label, correct, top ([{class, probability}], best first)."""
    probs, idx = logits.float().softmax(dim=1).topk(min(top_k, logits.shape[1]), dim=1)
    return [{"video_id": str(vid), "label": classes[label], "correct": bool(top[0] == label),
             "top": [{"class": classes[i], "probability": round(p, 6)} for p, i in zip(ps, top)]}
            for vid, label, ps, top in zip(video_ids, labels.tolist(), probs.tolist(), idx.tolist())]


def write_outputs(path: str | Path, rows: list[dict[str, Any]], per_class: list[dict[str, Any]],
                  confusion: np.ndarray, classes: Sequence[str], *, title: str) -> list[Path]:
    """FILE and the three files beside it; returns their paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=1))
    else:
        k = max((len(r["top"]) for r in rows), default=0)
        header = ["video_id", "label", "correct"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "probability")]
        path.write_text(_csv([header] + [[r["video_id"], r["label"], int(r["correct"])]
                                         + [v for t in r["top"] for v in (t["class"], t["probability"])] for r in rows]))
    beside = path.with_name(path.stem + "_per_class.csv"), path.with_name(path.stem + "_confusion.csv")
    beside[0].write_text(_csv([["class", "accuracy", "support"]]
                              + [[c["class"], "" if c["accuracy"] is None else round(c["accuracy"], 6), c["support"]]
                                 for c in per_class]))
    beside[1].write_text(_csv([["true \\ predicted", *classes]]
                              + [[name, *counts] for name, counts in zip(classes, confusion.tolist())]))
    png = plot_confusion(confusion, classes, path.with_name(path.stem + "_confusion.png"), title=title)
    return [path, *beside, png]


def _csv(rows: list[list[Any]]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()
