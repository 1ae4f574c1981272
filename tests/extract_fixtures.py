"""A few short demo videos and a small extracted store, shared by the store-URL and interop tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.demo_data import DemoDataConfig, generate
from pipeline.extraction import ExtractConfig
from pipeline.store import FeatureStore

# train and val videos of three classes: enough to check layout, index and features, and fast
VIDEOS = ("moving_left_000", "moving_left_001", "moving_right_000", "zooming_in_001")


def small_demo(out: Path) -> Path:
    """Demo videos (6 frames, 32 px) and `small.csv`, a manifest of `VIDEOS` beside the full one."""
    generate(DemoDataConfig(out=str(out), videos_per_class=2, frames=6, size=32))
    lines = (out / "manifest.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if line.split(",")[0] in VIDEOS]
    (out / "small.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    (out / "small.classes.txt").write_text((out / "manifest.classes.txt").read_text())
    return out / "small.csv"


def extract_args(manifest: Path, output: str) -> list[str]:
    return ["extract", "-m", str(manifest), "-o", output, "--backbone", "tiny", "--weights", "none",
            "--executor", "local", "--batch-size", "8"]


def extract_config(manifest: Path, output: str, **kw) -> ExtractConfig:
    base = dict(manifest=str(manifest), output=output, backbone="tiny", weights="none", executor="local",
                batch_size=8)
    return ExtractConfig(**{**base, **kw})


def assert_same_features(a: FeatureStore, b: FeatureStore, names=("rgb",)) -> None:
    """Same complete videos, same per-video attrs that matter to stage two, equal arrays."""
    ia, ib = a.index(), b.index()
    assert list(ia["video_id"]) == list(ib["video_id"])
    assert list(ia["label"]) == list(ib["label"]) and list(ia["split"]) == list(ib["split"])
    assert list(ia["num_frames"]) == list(ib["num_frames"]) and list(ia["status"]) == list(ib["status"])
    for video_id in ia["video_id"][ia["status"] == "complete"]:
        for name in names:
            x, y = a.read(str(video_id), name), b.read(str(video_id), name)
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        assert a.video_attrs(str(video_id))["frame_index"] == b.video_attrs(str(video_id))["frame_index"]
