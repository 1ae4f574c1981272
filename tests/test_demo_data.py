import csv

import numpy as np

from pipeline.demo_data import CLASSES, DemoDataConfig, generate, render_clip
from pipeline.video import probe, read_frames


def test_generates_labelled_videos_and_manifest(tmp_path):
    result = generate(DemoDataConfig(out=str(tmp_path), videos_per_class=2, frames=6, size=48))
    rows = list(csv.DictReader(result.manifest.open()))
    assert len(rows) == result.num_videos == 2 * len(CLASSES)
    assert {r["split"] for r in rows} == {"train", "val"}
    assert result.classes.read_text().splitlines() == list(CLASSES)
    info = probe(tmp_path / rows[0]["path"])
    assert (info.num_frames, info.width, info.height) == (6, 48, 48)


def test_is_deterministic(tmp_path):
    a = generate(DemoDataConfig(out=str(tmp_path / "a"), videos_per_class=2, frames=4, size=32))
    b = generate(DemoDataConfig(out=str(tmp_path / "b"), videos_per_class=2, frames=4, size=32))
    assert a.manifest.read_text() == b.manifest.read_text()
    first = "videos/moving_left_000.mp4"
    assert np.array_equal(read_frames(tmp_path / "a" / first), read_frames(tmp_path / "b" / first))


def test_pairs_are_time_reversals():
    """Classes 2k and 2k+1 draw the same frames in opposite order (what makes TSN order-blind)."""
    glyph = np.zeros((20, 20), np.uint8)
    glyph[4:16, 8:12] = 255
    for pair in range(len(CLASSES) // 2):
        forward = render_clip(2 * pair, glyph, np.random.default_rng(3), 8, 64)
        backward = render_clip(2 * pair + 1, glyph, np.random.default_rng(3), 8, 64)
        assert np.array_equal(forward, backward[::-1])
        assert not np.array_equal(forward, backward)


def test_uses_digits_sheet_when_available(tmp_path, assets_dir):
    result = generate(
        DemoDataConfig(out=str(tmp_path), videos_per_class=2, frames=4, size=32,
                       digits=str(assets_dir / "images" / "digits.png"))
    )
    assert result.glyphs == "digits"


def test_cli_out_comes_from_the_config_file_unless_given(tmp_path, stpipe, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "demo-data.yaml"
    config.write_text("out: from-config\nvideos_per_class: 2\nframes: 4\nsize: 32\n")
    code, _, err = stpipe(["demo-data", "--config", config])
    assert code == 0, err
    assert (tmp_path / "from-config" / "manifest.csv").is_file() and not (tmp_path / "demo-data").exists()
    code, _, err = stpipe(["demo-data", "--config", config, "-o", tmp_path / "flag"])
    assert code == 0, err
    assert (tmp_path / "flag" / "manifest.csv").is_file()
