"""Stage one end to end on the tiny backbone: layout, correctness, resume, failures, safety."""

import csv
import shutil

import numpy as np
import pytest
import torch

from pipeline.backbones import build_backbone
from pipeline.errors import StoreError
from pipeline.extraction import ExtractConfig
from pipeline.flow import build_flow, dequantize_flow, quantize_flow
from pipeline.store import FeatureStore, video_key
from pipeline.video import read_frames
from stages import extract


def config(demo, store, **kw):
    base = dict(manifest=str(demo / "manifest.csv"), output=str(store), backbone="tiny", weights="none",
                executor="local", batch_size=8, chunk_frames=4)
    return ExtractConfig(**{**base, **kw})


def rows(manifest):
    return list(csv.DictReader(open(manifest)))


def test_layout_provenance_and_index(demo, tmp_path):
    result = extract.run(config(demo, tmp_path / "s.zarr"))
    assert (result.done, result.failed, result.total, result.frames) == (20, 0, 20, 120)
    store = FeatureStore.open(str(tmp_path / "s.zarr"))
    meta = store.meta
    assert meta["classes"][0] == "moving left" and meta["backbone"]["name"] == "tiny"
    assert meta["config_hash"] and len(meta["manifest_sha256"]) == 64
    index = store.index()
    assert sorted(index["video_id"]) == sorted(r["video_id"] for r in rows(demo / "manifest.csv"))
    assert set(index["status"]) == {"complete"}
    attrs = store.video_attrs("moving_right_001")
    assert attrs["label_index"] == 1 and attrs["split"] == "train" and attrs["frame_index"] == list(range(6))
    rgb = store.video_group("moving_right_001")["rgb"]
    assert rgb.shape == (1, 6, meta["backbone"]["dim"]) and rgb.dtype == np.float16
    assert tuple(rgb.metadata.dimension_names) == ("view", "time", "channel")


def test_features_equal_a_direct_forward(demo, tmp_path):
    """Cross-video batching and scattering put every frame's features in its own place."""
    extract.run(config(demo, tmp_path / "s.zarr", batch_size=5))
    store = FeatureStore.open(str(tmp_path / "s.zarr"))
    backbone = build_backbone("tiny", weights="none")
    for video_id in ("moving_left_000", "zooming_out_001", "disappearing_001"):
        frames = torch.from_numpy(read_frames(demo / "videos" / f"{video_id}.mp4", short_side=72))
        want = backbone.forward_features(backbone.preprocess(frames)).numpy()
        np.testing.assert_allclose(store.read(video_id, "rgb")[0].astype(np.float32), want, rtol=2e-3, atol=2e-3)


def test_resume_redoes_only_unfinished_videos_bit_identically(demo, tmp_path):
    full = tmp_path / "full.zarr"
    extract.run(config(demo, full))
    part = tmp_path / "part.zarr"
    shutil.copytree(full, part)
    store = FeatureStore.open(str(part), mode="r+")
    store.invalidate_index()  # as the killed run did before its first write
    store.video_group("moving_up_000").attrs["complete"] = False  # killed before its last write
    del store.root["videos"][video_key("rotating_clockwise_001")]  # killed before it started
    result = extract.run(config(demo, part, batch_size=8))
    assert (result.done, result.skipped) == (2, 18)
    a, b = FeatureStore.open(str(full)), FeatureStore.open(str(part))
    for video_id in a.index()["video_id"]:
        assert np.array_equal(a.read(video_id, "rgb"), b.read(video_id, "rgb")), video_id


def test_writer_lanes_write_the_same_store(demo, tmp_path, monkeypatch):
    """On an object store each video's writes go to one of several writer lanes (videos in parallel,
    each in order, `complete` last); the store is the same as with one lane."""
    import pipeline.extraction.extractor as extractor_module

    one = tmp_path / "one.zarr"
    extract.run(config(demo, one))
    monkeypatch.setattr(extractor_module, "write_threads", lambda store: 4)
    many = tmp_path / "many.zarr"
    assert extract.run(config(demo, many)).done == 20
    a, b = FeatureStore.open(str(one)), FeatureStore.open(str(many))
    for video_id in a.index()["video_id"]:
        assert b.video_attrs(video_id)["complete"] and np.array_equal(a.read(video_id, "rgb"), b.read(video_id, "rgb"))


def test_a_finished_extraction_answers_from_the_store_without_models(demo, tmp_path, monkeypatch):
    """A no-op re-run reads the manifest and the index only; one unfinished video, or a stale index,
    takes the full path again."""
    out = tmp_path / "s.zarr"
    extract.run(config(demo, out))

    def no_models(cfg, device=None):
        raise AssertionError("a finished extraction built its models")

    monkeypatch.setattr(extract, "load_models", no_models)
    again = extract.run(config(demo, out))
    assert (again.total, again.skipped, again.done, again.failed) == (20, 20, 0, 0)
    FeatureStore.open(str(out), mode="r+").invalidate_index()
    with pytest.raises(AssertionError, match="built its models"):
        extract.run(config(demo, out))
    monkeypatch.undo()
    with pytest.raises(StoreError, match="different extract config"):  # still refused, not answered
        extract.run(config(demo, out, batch_size=8, chunk_frames=4, features="spatial"))


def test_a_finished_extraction_re_run_does_not_import_torch(demo, tmp_path):
    """The no-op answer costs what `stpipe inspect` costs: torch (~1-2 s to import) stays out."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "s.zarr"
    extract.run(config(demo, out))
    code = (
        "import sys; from stages import extract; from pipeline.extraction import ExtractConfig; "
        f"r = extract.run(ExtractConfig(manifest={str(demo / 'manifest.csv')!r}, output={str(out)!r}, "
        "backbone='tiny', weights='none', executor='local', batch_size=8, chunk_frames=4)); "
        "print(r.skipped, r.done, 'torch' in sys.modules)"
    )
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["20", "0", "False"]


def test_a_batch_in_flight_writes_the_same_store(demo, tmp_path, monkeypatch):
    """CUDA's schedule (a batch's features handed out while the next one runs), here on the CPU."""
    from pipeline.extraction import Extractor

    direct = tmp_path / "direct.zarr"
    extract.run(config(demo, direct, batch_size=5, amp="bf16"))
    original = Extractor.__init__

    def overlapped(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.in_flight = 2

    monkeypatch.setattr(Extractor, "__init__", overlapped)
    overlap = tmp_path / "overlap.zarr"
    result = extract.run(config(demo, overlap, batch_size=5, amp="bf16"))
    assert (result.done, result.failed) == (20, 0)
    a, b = FeatureStore.open(str(direct)), FeatureStore.open(str(overlap))
    assert a.meta["backbone"]["amp"] == "bf16" and a.meta["content"]["amp"] == "bf16"
    for video_id in a.index()["video_id"]:
        x, y = a.read(video_id, "rgb"), b.read(video_id, "rgb")
        assert x.dtype == np.float16 and np.array_equal(x, y), video_id


def test_amp_is_content_only_when_set(demo, tmp_path):
    plain = config(demo, tmp_path / "s.zarr")
    assert "amp" not in plain.content()  # stores made before the option keep their config hash
    assert config(demo, tmp_path / "s.zarr", amp="fp16").content()["amp"] == "fp16"


FLOW = dict(flow=True, flow_method="tvl1-fastest", flow_short_side=32, flow_batch=3)


def test_flow_in_the_same_pass_equals_tv_l1_on_the_decoded_frames(demo, tmp_path):
    """Cached fields = quantised TV-L1 of the frames resized for flow, across chunk boundaries
    (chunk_frames=4, flow_batch=3 < 6 frames), with the right sign on the demo's known motions."""
    extract.run(config(demo, tmp_path / "s.zarr", flow_features=True, flow_stack=3, **FLOW))
    store = FeatureStore.open(str(tmp_path / "s.zarr"))
    group = store.video_group("moving_right_001")
    assert tuple(group["flow"].metadata.dimension_names) == ("time", "component", "y", "x")
    assert group["flow"].dtype == np.uint8 and group["flow"].shape[:2] == (5, 2)  # 6 frames -> 5 fields
    assert group["flow_feat"].shape[:2] == (1, 6)  # one flow-stream vector per frame
    # the reference eager (built with its default, it compiled: 78 s of a cold inductor cache for 10 pairs);
    # compiled vs eager is tests/test_flow.py's
    method = build_flow("tvl1-fastest", device="cpu", compile=False)
    for video_id in ("moving_right_001", "moving_left_000"):
        frames = torch.from_numpy(read_frames(demo / "videos" / f"{video_id}.mp4", short_side=72))
        small = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(32, 32), mode="bilinear",
                                                antialias=True, align_corners=False).round().clamp(0, 255)
        small = small.byte().permute(0, 2, 3, 1)
        want = quantize_flow(method.pairs(small[:-1], small[1:]), bound=20.0).numpy()
        got = store.read(video_id, "flow")
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, video_id  # one level = 0.16 px
        mean_dx = float(dequantize_flow(got, bound=20.0)[:, 0].mean())
        assert (mean_dx > 0.05) if video_id.startswith("moving_right") else (mean_dx < -0.05), (video_id, mean_dx)


def test_flow_resume_is_bit_identical_and_float16_option(demo, tmp_path):
    full = tmp_path / "full.zarr"
    extract.run(config(demo, full, **FLOW))
    part = tmp_path / "part.zarr"
    shutil.copytree(full, part)
    store = FeatureStore.open(str(part), mode="r+")
    store.invalidate_index()  # as the killed run did before its first write
    store.video_group("moving_up_000").attrs["complete"] = False
    assert extract.run(config(demo, part, **FLOW)).done == 1
    a, b = FeatureStore.open(str(full)), FeatureStore.open(str(part))
    for video_id in a.index()["video_id"]:
        assert np.array_equal(a.read(video_id, "flow"), b.read(video_id, "flow")), video_id
    extract.run(config(demo, tmp_path / "f16.zarr", flow_dtype="float16", **FLOW))
    f16 = FeatureStore.open(str(tmp_path / "f16.zarr")).read("moving_up_000", "flow")
    assert f16.dtype == np.float16
    q = a.read("moving_up_000", "flow")
    assert np.abs(dequantize_flow(q, bound=20.0) - f16.astype(np.float32)).max() <= 20.0 / 255 + 1e-2


def test_different_config_is_refused_and_overwrite_replaces(demo, tmp_path):
    store = tmp_path / "s.zarr"
    extract.run(config(demo, store))
    with pytest.raises(StoreError, match="different extract config \\(differs in: features\\)"):
        extract.run(config(demo, store, features="spatial"))
    result = extract.run(config(demo, store, features="spatial", overwrite=True))
    assert result.done == 20
    assert FeatureStore.open(str(store)).video_group("moving_left_000")["rgb"].ndim == 5


def test_views_and_spatial_maps(demo, tmp_path):
    extract.run(config(demo, tmp_path / "s.zarr", views="flip", features="spatial"))
    store = FeatureStore.open(str(tmp_path / "s.zarr"))
    rgb = store.read("moving_left_000", "rgb")
    assert rgb.shape[:2] == (2, 6) and rgb.ndim == 5
    assert tuple(store.video_group("moving_left_000")["rgb"].metadata.dimension_names) == (
        "view", "time", "channel", "y", "x")
    assert not np.array_equal(rgb[0], rgb[1])  # the flipped view is a different input


def test_video_backbone_clips(demo, tmp_path):
    extract.run(config(demo, tmp_path / "s.zarr", backbone="tiny_video"))
    store = FeatureStore.open(str(tmp_path / "s.zarr"))
    attrs = store.video_attrs("moving_left_000")
    rgb = store.read("moving_left_000", "rgb")
    assert rgb.shape[1] == len(attrs["feature_frame_index"]) >= 1


def test_bad_inputs_are_recorded_and_good_videos_complete(demo, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n")
    good = demo / "videos" / "moving_left_000.mp4"
    data = good.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    folder = bad / "frames"
    folder.mkdir()
    for i, frame in enumerate(read_frames(good)):
        from PIL import Image

        Image.fromarray(frame).save(folder / f"{i + 1:05d}.jpg")
    (folder / "00003.jpg").write_bytes(b"garbage")
    manifest = tmp_path / "m.csv"
    hostile = ["../escape", "a/b", "ünï cödé", "x" * 300, "__init__"]
    lines = ["video_id,path,label,split"]
    lines += [f"{name},bad/{name}.mp4,moving left,train" for name in ("empty", "text", "truncated")]
    lines += ["missing,bad/missing.mp4,moving left,train", "folder,bad/frames,moving left,train"]
    lines += [f"\"{vid}\",{good},moving right,val" for vid in hostile]
    manifest.write_text("\n".join(lines) + "\n")
    shutil.copy(demo / "manifest.classes.txt", tmp_path / "m.classes.txt")
    store_path = tmp_path / "s.zarr"
    result = extract.run(config(demo, store_path, manifest=str(manifest)))
    store = FeatureStore.open(str(store_path))
    failed = {f.video_id: f.error for f in store.failures()}
    assert set(failed) == {"empty", "text", "missing", "folder"} | ({"truncated"} & set(failed))
    assert "file is empty" in failed["empty"] and "00003.jpg" in failed["folder"]
    assert all("\n" not in e for e in failed.values())
    assert result.failed == len(failed) and result.done == 10 - len(failed)
    for vid in hostile:
        assert store.is_complete(vid) and store.video_attrs(vid)["video_id"] == vid
    keys = {p.name for p in (store_path / "videos").iterdir()}
    assert all("/" not in k and not k.startswith(".") for k in keys)
    assert not (tmp_path / "escape").exists() and sorted(p.name for p in store_path.iterdir()) == [
        "failures", "index", "pack", "videos", "zarr.json"]
    index = store.index()
    assert sorted(index["video_id"][index["status"] == "failed"]) == sorted(failed)


def test_cli_exit_code_and_summary(demo, tmp_path, capsys):
    from cli import main

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_id,path,label,split\nok,{demo}/videos/moving_left_000.mp4,moving left,train\n"
                        "gone,nowhere.mp4,moving left,train\n")
    shutil.copy(demo / "manifest.classes.txt", tmp_path / "m.classes.txt")
    with pytest.raises(SystemExit) as exc:
        main(["extract", "-m", str(manifest), "-o", str(tmp_path / "s.zarr"), "--backbone", "tiny",
              "--weights", "none", "--executor", "local"])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "failed: gone:" in err and "1 videos failed" in err
