"""Training curves as TensorBoard event files, when `tensorboard` is installed (pip install
'stpipe-video[tensorboard]'). train-head, every ablation trial and finetune write them into their
run dir, so `tensorboard --logdir runs/` shows each run under its folder's name.

`epoch_curves(run_dir, progress)` wraps a progress callback: it passes every event on and adds each
finished epoch's record (a `Finished` event whose `item` is the loop's epoch record,
pipeline.training.loop) as scalars at step = epoch: train/loss, val/loss, val/top1, val/top5, lr,
throughput. Without tensorboard it hands back `progress` itself. The writer (and its file) starts at
the first finished epoch, so a re-run that trains nothing leaves no empty file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.progress import Event, Finished, Progress, emitter

EVENT_FILES = "events.out.tfevents.*"  # how SummaryWriter names its files: a run dir's own files


def available() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the `tensorboard` package)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def epoch_curves(run_dir: str | Path, progress: Progress | None) -> Iterator[Progress | None]:
    if not available():
        yield progress
        return
    from torch.utils.tensorboard import SummaryWriter

    forward = emitter(progress)
    writer: list[Any] = []

    def sink(event: Event) -> None:
        record = event.item if isinstance(event, Finished) else None
        if isinstance(record, Mapping) and "epoch" in record:
            if not writer:
                writer.append(SummaryWriter(log_dir=str(run_dir)))
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer[0].add_scalar(_tag(key), value, global_step=int(record["epoch"]))
        forward(event)

    try:
        yield sink
    finally:
        for w in writer:
            w.close()


def _tag(key: str) -> str:
    """train_loss -> train/loss, val_top1 -> val/top1 (TensorBoard groups by the part before '/')."""
    split, _, name = key.partition("_")
    return f"{split}/{name}" if split in ("train", "val") and name else key


def remove_event_files(run_dir: str | Path) -> None:
    """An overwritten run's old curves go with it."""
    for path in Path(run_dir).glob(EVENT_FILES):
        path.unlink()
