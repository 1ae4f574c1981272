"""Typed progress events (pipeline.progress) and cli.py's one renderer of them."""

from __future__ import annotations

from dataclasses import dataclass

from store_fixtures import make_store

from cli import _rendered
from pipeline.progress import Advanced, Finished, Note, Started
from pipeline.training.config import TrainHeadConfig
from stages import train_head


@dataclass(frozen=True)
class Unknown:
    message: str = ""


def test_renderer_draws_bars_with_rates_lines_and_summaries(capsys):
    with _rendered() as show:
        show(Note("plain line", source=""))
        show(Started("extract", total=3, unit="video", detail="flow eager"))
        show(Advanced("extract", amounts={"frames": 10}, detail="flow eager"))
        show(Note("above the bar"))
        show(Advanced("extract", amounts={"frames": 10}, message="  done    one video"))
        show(Unknown("a newer event kind with a message"))
        show(Unknown())  # nothing to show: skipped
        show(Advanced("elsewhere", item="x"))  # a task never started: drawn when its first unit arrives
        show(Finished("extract", summary="3 videos extracted"))
    out, err = capsys.readouterr()
    assert "plain line" in err and "note: above the bar" in err and "  done    one video" in err
    assert "a newer event kind with a message" in err
    assert "frames/s, flow eager" in err and "2/3" in err and "elsewhere" in err
    assert out.strip() == "3 videos extracted"


def test_train_head_reports_typed_events(tmp_path):
    store = str(tmp_path / "s.zarr")
    make_store(store, per_class={"train": 4, "val": 2})
    events = []
    train_head.run(TrainHeadConfig(store=store, out=str(tmp_path / "run"), head="mlp", segments=4, epochs=2,
                                   batch_size=8), progress=events.append)
    assert all(isinstance(e, (Started, Advanced, Finished, Note)) for e in events)
    epochs = [e for e in events if isinstance(e, Finished) and e.task.startswith("epoch")]
    assert [e.task for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert epochs[0].summary.startswith("epoch   1  lr ") and "samples/s" in epochs[0].summary
    starts = {e.task: e for e in events if isinstance(e, Started)}
    assert starts["epoch 1/2"].total == 2 and starts["epoch 1/2"].unit == "batch" and starts["epoch 1/2"].transient
    assert sum(e.n for e in events if isinstance(e, Advanced) and e.task == "epoch 1/2") == 2
    assert any(isinstance(e, Note) and e.message.startswith("train ") and ": 16 videos" in e.message for e in events)
