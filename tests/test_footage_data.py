"""`stpipe demo-data --from`: order-dependent clips cut from real footage (pipeline.footage_data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from manifests import read_manifest
from pipeline.demo_data import write_mp4
from pipeline.errors import ConfigError
from pipeline.footage_data import CLASSES, FootageConfig, cut_clip, generate
from pipeline.progress import Note

ASSETS = os.environ.get("STPIPE_ASSETS")


def _frames_numbered(n: int = 60, h: int = 96, w: int = 128) -> np.ndarray:
    """Frame i is uniformly grey level i: a clip's pixel values are the source frames it used."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, h, w, 3)).copy()


def _frames_gradient(n: int = 60, h: int = 96, w: int = 192) -> np.ndarray:
    """A still scene whose grey level is the x coordinate: a crop's mean says where it is."""
    row = np.linspace(0, 255, w).astype(np.uint8)
    return np.broadcast_to(row[None, None, :, None], (n, h, w, 3)).copy()


def test_playback_direction_and_time_range():
    frames = _frames_numbered()
    for label, name in enumerate(CLASSES[:2]):
        clip = cut_clip(frames, label, np.random.default_rng(0), 20, 50, 8, 32)
        levels = clip.reshape(8, -1).mean(1)
        assert levels.min() >= 20 and levels.max() <= 49  # only frames of its time range
        steps = np.diff(levels)
        assert (steps > 0).all() if name == "playing forwards" else (steps < 0).all()


def test_pans_and_zooms_move_the_crop_the_named_way():
    frames = _frames_gradient()
    means = {}
    for label, name in enumerate(CLASSES):
        clip = cut_clip(frames, label, np.random.default_rng(1), 0, 60, 8, 32).astype(float)
        means[name] = clip.mean(axis=(1, 2, 3))
        spread = clip.std(axis=(1, 2, 3))
        if name == "zooming in":  # a shrinking crop sees a narrower range of x
            assert spread[-1] < spread[0] * 0.8
        if name == "zooming out":
            assert spread[-1] > spread[0] * 1.2
    assert means["panning left"][-1] < means["panning left"][0] - 10  # the view moves to smaller x
    assert means["panning right"][-1] > means["panning right"][0] + 10


def test_same_config_same_clips():
    frames = _frames_numbered()
    a = cut_clip(frames, 3, np.random.default_rng(5), 0, 60, 6, 32)
    b = cut_clip(frames, 3, np.random.default_rng(5), 0, 60, 6, 32)
    assert np.array_equal(a, b)


def _moving_video(path: Path, n: int = 48) -> Path:
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, size=(96, 256, 3)).astype(np.uint8)
    frames = np.stack([scene[:, i:i + 128] for i in range(n)])
    write_mp4(path, frames, fps=12)
    return path


def test_generate_splits_sources_in_time_and_skips_bad_files(tmp_path):
    folder = tmp_path / "footage"
    folder.mkdir()
    _moving_video(folder / "street.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (folder / "notes.txt").write_text("ignored")
    notes = []
    cfg = FootageConfig(sources=(str(folder),), out=str(tmp_path / "out"), train_clips=2, val_clips=1, frames=6,
                        size=64)
    data = generate(cfg, progress=lambda e: isinstance(e, Note) and notes.append(e.message))
    assert data.num_videos == len(CLASSES) * 3
    assert data.sources == [str(folder / "street.mp4")]
    assert any(n.startswith("skipped broken.mp4:") for n in data.notes)
    manifest = read_manifest(data.manifest)
    assert manifest.classes == list(CLASSES)
    splits = [e.split for e in manifest.entries]
    assert splits.count("train") == 2 * len(CLASSES) and splits.count("val") == len(CLASSES)
    again = generate(FootageConfig(**{**cfg.__dict__, "out": str(tmp_path / "again")}))
    assert [e.video_id for e in read_manifest(again.manifest).entries] == [e.video_id for e in manifest.entries]


def test_no_usable_footage_is_one_clear_error(tmp_path):
    (tmp_path / "broken.avi").write_bytes(b"\0" * 1000)
    with pytest.raises(ConfigError, match="no usable footage: skipped broken.avi"):
        generate(FootageConfig(sources=(str(tmp_path),), out=str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="no such folder"):
        generate(FootageConfig(sources=(str(tmp_path / "missing"),), out=str(tmp_path / "out")))


def test_cli_demo_data_from(tmp_path, stpipe):
    _moving_video(tmp_path / "clip.mp4")
    out = tmp_path / "set"
    result = CliRunner().invoke(cli, ["demo-data", "--from", str(tmp_path / "clip.mp4"), "-o", str(out),
                                      "--train-clips", "1", "--val-clips", "1", "--frames", "4", "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "wrote 16 clips cut from 1 videos" in result.output
    assert (out / "footage-data.yaml").is_file()
    code, _, err = stpipe(["demo-data", "--train-clips", "2", "-o", tmp_path / "x"])
    assert code == 2 and err.strip() == "stpipe: error: --train-clips, --val-clips and --val-sources need --from"


@pytest.mark.assets
@pytest.mark.skipif(not ASSETS, reason="needs STPIPE_ASSETS")
def test_damaged_asset_video_is_skipped(tmp_path):
    notes = []
    data = generate(FootageConfig(sources=(f"{ASSETS}/videos/Megamind_bugy.avi", f"{ASSETS}/videos/tree.avi"),
                                  out=str(tmp_path), train_clips=1, val_clips=1),
                    progress=lambda e: isinstance(e, Note) and notes.append(e.message))
    assert any("skipped Megamind_bugy.avi: damaged" in n for n in notes)
    assert [Path(s).name for s in data.sources] == ["tree.avi"]
