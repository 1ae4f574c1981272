"""Bad inputs: every broken, odd or hostile entry is extracted or recorded with a one-line reason,
the run completes, good videos are intact, and nothing is written outside the store.

The corpus (tests/faults/corpus.py) is generated from one good clip; the shared sample videos
(`../shared/assets/videos`, via STPIPE_ASSETS) are run as found, including the AVI whose header
lies about its frame count and the one named "bugy".
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from corpus import hostile_ids as make_hostile_ids
from corpus import make_corpus, write_video

from pipeline.demo_data import CLASSES, render_clip
from pipeline.extraction import ExtractConfig
from pipeline.store import FeatureStore, video_key
from stages import extract

SEED = 11


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "path", "label", "split"])
        writer.writerows((vid, where, CLASSES[0], "train") for vid, where in rows)
    path.with_name(path.stem + ".classes.txt").write_text("\n".join(CLASSES) + "\n")
    return path


def argv(manifest, store, *extra):
    return ["extract", "-m", str(manifest), "-o", str(store), "--backbone", "tiny", "--weights", "none",
            "--executor", "local", "--batch-size", "8", "--max-retries", "1", *extra]


def listing(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(SEED)
    glyph = np.pad(np.full((12, 12), 255, np.uint8), 4)
    write_video(out / "good.mp4", render_clip(1, glyph, rng, 48, 96))
    return out


def test_corpus_each_extracted_or_recorded_and_nothing_escapes(launcher, good_clip, tmp_path):
    out = good_clip
    cases = make_corpus(out, out / "good.mp4", np.random.default_rng(SEED))
    hostile = make_hostile_ids()
    manifest = write_manifest(out / "corpus.csv", [(c.video_id, c.path) for c in cases]
                              + [(vid, "good.mp4") for vid in hostile] + [("good", "good.mp4")])
    store = tmp_path / "s.zarr"
    before = listing(tmp_path, store) | listing(out, store)
    code, log = launcher.run(argv(manifest, store))
    assert code == 3, log[-3000:]  # PartialFailure: the run finished, some videos failed
    assert "Traceback" not in log
    s = FeatureStore.open(str(store))
    failures = {f.video_id: f for f in s.failures()}
    done = s.complete_ids()
    rows = []
    for c in cases:
        status = "complete" if c.video_id in done else "failed" if c.video_id in failures else "lost"
        assert status != "lost", c
        assert c.expect in (status, "either"), (c, failures.get(c.video_id))
        if status == "failed":
            reason = failures[c.video_id].error
            assert reason and "\n" not in reason and len(reason) <= 300 and c.reason in reason, (c, reason)
            assert c.video_id in log  # listed on stderr (first ten) or counted
        else:
            n = s.video_attrs(c.video_id)["num_frames"]
            assert c.frames is None or n == c.frames, (c, n)
            reason = f"{n} frames"
        rows.append(f"| {c.what} | {status} | {reason} |")
    # good videos intact: every hostile id holds exactly the clean features of the good clip
    clean = tmp_path / "clean.zarr"
    extract.run(ExtractConfig(manifest=str(write_manifest(out / "good.csv", [("good", "good.mp4")])),
                              output=str(clean), backbone="tiny", weights="none", executor="local", batch_size=8))
    want = FeatureStore.open(str(clean)).read("good", "rgb")
    for vid in [*hostile, "good"]:
        assert vid in done, vid
        assert s.video_attrs(vid)["video_id"] == vid
        assert np.array_equal(s.read(vid, "rgb"), want), vid
    # nothing escapes: one folder per video directly under videos/, nothing new outside the store
    keys = {p.name for p in (store / "videos").iterdir() if p.is_dir()}
    assert keys == {video_key(v) for v in done}
    assert all("/" not in k and not k.startswith(".") and len(k) <= 160 for k in keys)
    assert sorted(p.name for p in store.iterdir()) == ["failures", "index", "pack", "videos", "zarr.json"]
    after = listing(tmp_path, store) | listing(out, store)
    assert after - before == {"clean.zarr"} | {x for x in after if x.startswith("clean.zarr/")} | {
        "good.csv", "good.classes.txt"}, sorted(after - before)[:20]
    assert not Path("/tmp/stpipe-escape").exists()
    index = s.index()
    assert sorted(index["video_id"][index["status"] == "failed"]) == sorted(failures)
    assert len(index["video_id"]) == len(cases) + len(hostile) + 1
    print("\n".join(rows + [f"| hostile id {v!r} | complete | stays in videos/{video_key(v)[:40]} |"
                            for v in hostile]))


def test_shared_sample_videos(assets_dir, launcher, tmp_path):
    videos = sorted((assets_dir / "videos").iterdir())
    manifest = write_manifest(tmp_path / "assets.csv", [(p.stem, str(p)) for p in videos])
    store = tmp_path / "s.zarr"
    code, log = launcher.run(argv(manifest, store))
    s = FeatureStore.open(str(store))
    failures = {f.video_id: f.error for f in s.failures()}
    done = s.complete_ids()
    assert code == (3 if failures else 0), log[-2000:]
    assert done | set(failures) == {p.stem for p in videos} and not done & set(failures)
    assert all("\n" not in e for e in failures.values())
    for vid in sorted(done):
        attrs = s.video_attrs(vid)
        rgb = s.read(vid, "rgb")
        assert rgb.shape[1] == attrs["num_frames"] == len(attrs["frame_index"]) and np.isfinite(rgb).all()
        print(f"| {vid} | complete | {attrs['num_frames']} frames at {attrs['fps']:.2f} fps |")
    for vid, error in sorted(failures.items()):
        print(f"| {vid} | failed | {error} |")
