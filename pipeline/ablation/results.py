"""Trial records and `results.csv`: one row per trial of the grid, never a trial silently dropped.

A trial is finished when its run dir holds `metrics.json` and a `config.yaml` of the same training
identity; finished trials are read back, not re-run. Failed trials (after their retry) are recorded
in `failures.json` with the error and retried on the next run; trials a run never reached are
`pending`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ablation.grid import Trial
from pipeline.errors import StpipeError
from pipeline.training.config import TrainHeadConfig
from pipeline.training.identity import same_run
from pipeline.training.runs import read_run_config

COLUMNS = ("head", "segments", "modality", "grid", "seed", "params", "macs", "val_top1", "val_top5", "val_mean_class_acc",
           "train_seconds", "status",
           # what Table 3 of Köpüklü et al. counts (no projection), and how the trial went
           "head_params", "head_macs", "epochs", "best_epoch", "attempts", "run_dir", "error",
           # 1 when the trial did not train (pipeline.training.collapse): the summary keeps it out of the means
           "collapsed")
METRIC_KEYS = ("params", "macs", "val_top1", "val_top5", "val_mean_class_acc", "train_seconds", "head_params",
               "head_macs", "epochs", "best_epoch")


@dataclass
class TrialRecord:
    trial: Trial
    run_dir: Path
    status: str = "pending"  # pending, running, ok, failed
    metrics: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    error: str = ""
    resumed: bool = False  # finished by an earlier run

    def row(self) -> dict[str, Any]:
        t = self.trial
        row = {"head": t.head, "segments": t.segments, "modality": t.modality, "grid": t.grid_label, "seed": t.seed,
               "status": self.status, "attempts": self.attempts, "run_dir": str(self.run_dir), "error": self.error}
        row.update({k: self.metrics.get(k, "") for k in METRIC_KEYS})
        row["collapsed"] = int(bool(self.metrics.get("collapsed"))) if self.status == "ok" else ""
        return row


def finished_metrics(run_dir: Path, cfg: TrainHeadConfig) -> dict[str, Any] | None:
    """metrics.json of a completed run of this trial config (pipeline.training.identity), else None."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file() or not (run_dir / "config.yaml").is_file():
        return None
    try:
        saved = read_run_config(run_dir)
        values = json.loads(metrics.read_text())
    except (StpipeError, ValueError):
        return None
    return values if same_run(cfg, saved) else None


def write_results(path: Path, records: list[TrialRecord]) -> Path:
    """results.csv, atomically (a crash mid-write leaves the previous table)."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(v) for k, v in record.row().items()})
    tmp.replace(path)
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv rows with numbers parsed (blank cells become None)."""
    with open(path, newline="") as handle:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def read_failures(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_failures(path: Path, records: list[TrialRecord]) -> None:
    failed = {r.trial.name: {"error": r.error, "attempts": r.attempts} for r in records if r.status == "failed"}
    if not failed:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(failed, indent=1))
    tmp.replace(path)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _parse(value: str) -> Any:
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
