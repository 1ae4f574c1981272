"""Typed progress events (pipeline.progress) and cli.py's one renderer of them."""

from __future__ import annotations

from dataclasses import dataclass

from extract_fixtures import extract_config, small_demo
from store_fixtures import make_store

from cli import _rendered
from pipeline.ablation import AblateConfig, TrialUpdate
from pipeline.extraction import VideoJob
from pipeline.progress import Advanced, Finished, Note, Started
from pipeline.training.config import TrainHeadConfig
from stages import ablate, evaluate, export, extract, import_features, pack, train_head, verify


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


class Recorder(list):
    """A progress callback that refuses anything but pipeline.progress events."""

    def __call__(self, event) -> None:
        assert isinstance(event, (Started, Advanced, Finished, Note)), f"not a progress event: {event!r}"
        assert isinstance(event, Note) or event.task, event
        self.append(event)

    def tasks(self, kind=Started) -> list[str]:
        return [e.task for e in self if isinstance(e, kind)]


def test_every_stage_emits_only_progress_events(tmp_path):
    """extract, export, import, pack, verify, train-head, evaluate and ablate report through
    pipeline.progress alone; domain records (a video's job, a trial's update) ride as `item`."""
    seen = {}
    manifest = small_demo(tmp_path / "demo")
    store = str(tmp_path / "s.zarr")
    seen["extract"] = Recorder()
    extract.run(extract_config(manifest, store), progress=seen["extract"])
    videos = [e.item for e in seen["extract"] if isinstance(e, Advanced) and e.task == "extract"]
    assert len(videos) == 4 and all(isinstance(v, VideoJob) for v in videos)
    seen["export"] = Recorder()
    export.run(export.ExportConfig(store=store, output=str(tmp_path / "s.h5")), progress=seen["export"])
    seen["import"] = Recorder()
    import_features.run(import_features.ImportConfig(source=str(tmp_path / "s.h5"), output=str(tmp_path / "i.zarr")),
                        progress=seen["import"])
    assert sorted(e.item for e in seen["import"] if isinstance(e, Advanced)) == sorted(v.video_id for v in videos)
    seen["pack"] = Recorder()
    pack.run(pack.PackConfig(store=store, force=True), progress=seen["pack"])
    assert "pack rgb" in seen["pack"].tasks(Finished)
    seen["verify"] = Recorder()
    verify.run(verify.VerifyConfig(store=store), progress=seen["verify"])

    features = str(tmp_path / "f.zarr")
    make_store(features, per_class={"train": 4, "val": 2})
    run = str(tmp_path / "run")
    seen["train-head"] = Recorder()
    train_head.run(TrainHeadConfig(store=features, out=run, head="mlp", segments=4, epochs=1, batch_size=8),
                   progress=seen["train-head"])
    assert {"loading train", "loading val", "epoch 1/1"} <= set(seen["train-head"].tasks())
    seen["evaluate"] = Recorder()
    evaluate.run(evaluate.EvaluateConfig(run=run), progress=seen["evaluate"])
    assert "loading val" in seen["evaluate"].tasks()
    seen["ablate"] = Recorder()
    ablate.run(AblateConfig(store=features, out=str(tmp_path / "ab"), heads=("mlp",), segments=(4,), seeds=(0,),
                            train={"epochs": 1, "batch_size": 8}, executor="local"), progress=seen["ablate"])
    trials = [e.item for e in seen["ablate"] if isinstance(e, Advanced) and e.task == "ablate"]
    assert [t.kind for t in trials] == ["start", "done"] and all(isinstance(t, TrialUpdate) for t in trials)
    assert all(seen.values()), [name for name, events in seen.items() if not events]
