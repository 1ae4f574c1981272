"""TensorBoard event files of the training curves (pipeline/training/tensorboard_events.py)."""

from __future__ import annotations

import json

import pytest
from store_fixtures import make_store

from pipeline.progress import Finished, Note
from pipeline.training.config import TrainHeadConfig
from pipeline.training.tensorboard_events import EVENT_FILES, available, epoch_curves
from stages import train_head

needs_tensorboard = pytest.mark.skipif(not available(), reason="tensorboard not installed (the [tensorboard] extra)")


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@needs_tensorboard
def test_train_head_writes_its_curves_into_the_run_dir(tmp_path):
    store = str(tmp_path / "s.zarr")
    make_store(store, per_class={"train": 4, "val": 2})
    options = dict(store=store, out=str(tmp_path / "run"), head="mlp", segments=4, epochs=3, batch_size=8, proj_dim=16)
    cfg = TrainHeadConfig(**options)
    train_head.run(cfg)
    run_dir = tmp_path / "run"
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curves = scalars(run_dir)
    assert {"train/loss", "val/loss", "train/top1", "val/top1", "val/top5", "lr"} <= set(curves)
    for tag, key in (("train/loss", "train_loss"), ("val/top1", "val_top1"), ("lr", "lr")):
        assert curves[tag] == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in history]
    files = sorted(run_dir.glob(EVENT_FILES))
    train_head.run(cfg)  # the same command again: nothing to train, no new (empty) event file
    assert sorted(run_dir.glob(EVENT_FILES)) == files
    train_head.run(TrainHeadConfig(**{**options, "epochs": 2, "overwrite": True}))
    assert not set(run_dir.glob(EVENT_FILES)) & set(files)  # the overwritten run's curves went with it
    assert [step for step, _ in scalars(run_dir)["val/top1"]] == [1, 2]


def test_without_tensorboard_the_progress_callback_is_unchanged(monkeypatch, tmp_path):
    from pipeline.training import tensorboard_events

    monkeypatch.setattr(tensorboard_events, "available", lambda: False)
    seen = []
    with epoch_curves(tmp_path, seen.append) as progress:
        assert progress == seen.append
    assert not list(tmp_path.iterdir())


@needs_tensorboard
def test_every_event_passes_on_and_only_epoch_records_become_scalars(tmp_path):
    seen = []
    with epoch_curves(tmp_path, seen.append) as progress:
        events = [Note("hello"), Finished("loading train"), Finished("epoch 1/1", "line", item={"epoch": 1, "lr": 0.1,
                                                                                                   "stopped": ""})]
        for event in events:
            progress(event)
    assert seen == events
    assert scalars(tmp_path) == {"lr": [(1, pytest.approx(0.1))]}
