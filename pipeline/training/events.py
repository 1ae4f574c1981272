"""The training loops' callbacks (`callback(event, **info)`, pipeline.training.loop and
pipeline.finetune.loop; plain keywords so they cross Ray unchanged) as typed progress events
(pipeline.progress), with the line a finished epoch leaves. Kinds it does not know are dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.progress import Advanced, Finished, Note, Progress, Started, emitter


def epoch_line(record: dict[str, Any], stopped: str, throughput: str) -> str:
    """One line per finished epoch, one format for train-head and finetune."""
    return (f"epoch {record['epoch']:3d}  lr {record['lr']:.2e}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  val top-1 {record['val_top1']:.2%}  top-5 {record['val_top5']:.2%}  "
            f"{throughput}" + (f"  ({stopped})" if stopped else ""))


def train_head_throughput(record: dict[str, Any]) -> str:
    return f"{record['samples_per_second']:.0f} samples/s"


def finetune_throughput(record: dict[str, Any]) -> str:
    return f"{record['frames_per_second']:.1f} frames/s"


def loop_callback(progress: Progress | None, *, throughput: Callable[[dict[str, Any]], str] = train_head_throughput
                  ) -> Callable[..., None]:
    """A loop callback that turns its events into `progress` events. An epoch's bar counts what the
    loop reports as batches: finetune's micro-batches (`accum` per optimizer step, sized at run time)."""
    emit = emitter(progress)
    task = {"epoch": "", "load": ""}

    def callback(event: str, **info: Any) -> None:
        if event == "note":
            emit(Note(info["message"]))
        elif event == "load":
            name = f"loading {info['split']}"
            if task["load"] != name:
                task["load"] = name
                emit(Started(name, total=info["total"], unit="video", transient=True))
            emit(Advanced(name, n=0, done=info["done"]))
            if info["done"] == info["total"]:
                emit(Finished(name))
                task["load"] = ""
        elif event == "epoch_start":
            task["epoch"] = f"epoch {info['epoch']}/{info['epochs']}"
            emit(Started(task["epoch"], total=info["batches"] * info.get("accum", 1), unit="batch", transient=True))
        elif event == "batch":
            emit(Advanced(task["epoch"], amounts={"samples": info.get("size", 0)}))
        elif event == "epoch_end":
            emit(Finished(task["epoch"], summary=epoch_line(info["record"], info["stopped"],
                                                             throughput(info["record"])), item=info["record"]))

    return callback
