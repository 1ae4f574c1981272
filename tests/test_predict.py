"""`stpipe predict`: videos -> stage one's features -> the run's head, equal to scoring the store."""

from __future__ import annotations

import json

import pytest
import torch

from cli import main
from pipeline.demo_data import DemoDataConfig, generate
from pipeline.errors import ConfigError
from pipeline.extraction import ExtractConfig
from pipeline.store import FeatureStore
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import load_split
from pipeline.training.loop import make_source, predict
from pipeline.training.model import build_model, load_checkpoint
from stages import extract, train_head
from stages import predict as predict_stage


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    generate(DemoDataConfig(out=str(root / "demo"), videos_per_class=2, frames=6, size=32))
    store = str(root / "s.zarr")
    extract.run(ExtractConfig(manifest=str(root / "demo" / "manifest.csv"), output=store, backbone="tiny",
                              weights="none", executor="local", views="flip", batch_size=8))
    run = str(root / "run")
    train_head.run(TrainHeadConfig(store=store, out=run, head="lstm", segments=4, epochs=2, lr=0.05,
                                   standardize=True, proj_dim=16, recipe="paper"))
    return root, store, run


def test_predictions_equal_the_head_on_the_stores_features(trained):
    root, store_url, run = trained
    videos = ["moving_left_000", "zooming_in_001"]
    result = predict_stage.run(predict_stage.PredictConfig(
        run=run, videos=tuple(str(root / "demo" / "videos" / f"{v}.mp4") for v in videos), top_k=10))
    assert result.failed == 0
    checkpoint = load_checkpoint(f"{run}/checkpoint.pt")
    model = build_model(checkpoint["spec"])
    model.load_state_dict(checkpoint["model"])
    store = FeatureStore.open(store_url)
    stats = {s: (v["mean"].numpy(), v["std"].numpy()) for s, v in checkpoint["stats"].items()}
    probs = {}
    for name in ("train", "val"):
        split = load_split(store, name)
        logits, _ = predict(model, make_source(split, device=torch.device("cpu"), num_segments=4, stats=stats,
                                               max_batch=64), views=2, batch_size=64)
        probs.update(zip(split.video_ids.tolist(), logits.softmax(1)))
    for video, prediction in zip(videos, result.predictions):
        assert len(prediction.top) == 10
        want = probs[video]
        for item in prediction.top:
            assert item["probability"] == pytest.approx(float(want[store.classes.index(item["class"])]), abs=1e-5)
        assert [i["probability"] for i in prediction.top] == sorted((i["probability"] for i in prediction.top),
                                                                    reverse=True)


def test_cli_predict_json_and_bad_videos(trained, tmp_path, capsys):
    root, _, run = trained
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    good = str(root / "demo" / "videos" / "appearing_000.mp4")
    try:
        main(["predict", "--run", run, good, str(bad), "--json"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code == 3  # a partial failure: the good video is still classified
    rows = json.loads(out.out)
    assert rows[0]["video"] == good and len(rows[0]["top"]) == 5 and not rows[0]["error"]
    assert rows[1]["top"] == [] and "bad.mp4" in rows[1]["error"]
    with pytest.raises(ConfigError, match="no such video"):
        predict_stage.PredictConfig(run=run, videos=(str(tmp_path / "missing.mp4"),))
