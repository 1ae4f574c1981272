"""HDF5 export/import and per-video .npy import: round trips equal the source, bad inputs are one line."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
from extract_fixtures import VIDEOS, assert_same_features, extract_config, small_demo
from store_fixtures import make_store

from cli import main
from pipeline.errors import StoreError
from pipeline.progress import Advanced
from pipeline.store import Failure, FeatureStore, config_hash
from stages import extract

HOSTILE = "../evil/ü id"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def extracted(demo, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("extracted") / "s.zarr")
    assert extract.run(extract_config(demo, path)).done == len(VIDEOS)
    return FeatureStore.open(path)


def run_cli(capsys, argv, code=None):
    """Run `stpipe argv`; with `code`, expect that exit code and return the stderr lines."""
    capsys.readouterr()
    if code is None:
        main(argv)
        return capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code
    # progress bars (and the blank line a bar cut short by an error leaves) are not the error
    return [line for line in capsys.readouterr().err.splitlines()
            if line.strip() and not line.startswith(("import:", "export:"))]


def one_error(capsys, argv) -> str:
    lines = run_cli(capsys, argv, code=2)
    assert len(lines) == 1 and lines[0].startswith("stpipe: error: "), lines
    return lines[0]


# ---- HDF5 -------------------------------------------------------------------------------------


def test_extract_export_import_round_trip(extracted, tmp_path, capsys):
    h5_path, back = tmp_path / "features.h5", str(tmp_path / "back.zarr")
    assert "4 videos" in run_cli(capsys, ["export", extracted.url, str(h5_path)])
    with h5py.File(h5_path) as h5:  # readable without stpipe
        meta = json.loads(h5.attrs["stpipe"])
        assert meta["config_hash"] == extracted.meta["config_hash"] and h5.attrs["format"] == "stpipe-hdf5"
        assert [c.decode() for c in h5["classes"][...]] == extracted.classes
        assert sorted(v.decode() for v in h5["index/video_id"][...]) == sorted(VIDEOS)
        group = h5["videos/moving_left_001"]
        assert group.attrs["split"] == "train" and group.attrs["label"] == "moving left"
        assert [d.label for d in group["rgb"].dims] == ["view", "time", "channel"]
        np.testing.assert_array_equal(group["rgb"][...], extracted.read("moving_left_001", "rgb"))
        np.testing.assert_array_equal(group["frame_index"][...], np.arange(6))
    assert "4 imported" in run_cli(capsys, ["import", str(h5_path), "-o", back])
    imported = FeatureStore.open(back)
    assert_same_features(imported, extracted)
    for key in ("config_hash", "content", "classes", "backbone", "manifest_sha256"):
        assert imported.meta[key] == extracted.meta[key]
    assert imported.meta["origin"].startswith(f"imported from {h5_path}")
    for video_id in VIDEOS:
        assert imported.video_attrs(video_id) == extracted.video_attrs(video_id)
    assert "0 imported, 4 already complete" in run_cli(capsys, ["import", str(h5_path), "-o", back])
    assert f"origin    imported from {h5_path}" in run_cli(capsys, ["inspect", back])


def synthetic_store(url: str) -> FeatureStore:
    """Spatial rgb, quantised flow with attrs, flow-stream features, a hostile id and a failure."""
    rng = np.random.default_rng(0)
    provenance = {"classes": ["a", "b"], "config": {"x": 1}, "config_hash": config_hash({"x": 1}),
                  "backbone": {"name": "synthetic", "features": "spatial"}, "flow": {"method": "tvl1", "bound": 20.0}}
    store = FeatureStore.create(url, provenance=provenance)
    for i, video_id in enumerate(["v0", HOSTILE, "v2"]):
        t = 3 + i
        writer = store.begin_video(video_id, {"label": "ab"[i % 2], "label_index": i % 2, "split": "train", "fps": 25.0})
        writer.write("rgb", rng.normal(size=(2, t, 8, 3, 3)).astype(np.float16),
                     dims=("view", "time", "channel", "y", "x"), time_axis=1)
        writer.write("flow", rng.integers(0, 255, size=(t - 1, 2, 6, 6), dtype=np.uint8),
                     dims=("time", "component", "y", "x"), time_axis=0, attrs={"bound": 20.0, "quantisation": "uint8"})
        writer.write("flow_feat", rng.normal(size=(2, t - 1, 5)).astype(np.float16),
                     dims=("view", "time", "channel"), time_axis=1)
        writer.finish(num_frames=t, frame_index=list(range(0, 2 * t, 2)))
    store.record_failure(Failure("broken", "broken.mp4", "decode", "VideoError: no frames", 2))
    store.write_index()
    return store


def test_import_builds_the_pack_as_it_writes_equal_to_a_rebuild(tmp_path, capsys, monkeypatch):
    import pipeline.store.pack as store_pack

    source = make_store(str(tmp_path / "src.zarr"), flow_features=True, views=2, failed=["train/class_0/001"])
    h5_path, url = tmp_path / "s.h5", str(tmp_path / "s.zarr")
    run_cli(capsys, ["export", source.url, str(h5_path)])
    rebuilt = []
    monkeypatch.setattr(store_pack, "_build", lambda store, name, *a: rebuilt.append(name))
    run_cli(capsys, ["import", str(h5_path), "-o", url], code=3)  # the source's failed video stays failed
    assert rebuilt == []  # nothing read back: both packs were built from the videos in hand
    monkeypatch.undo()
    store = FeatureStore.open(url, mode="r+")
    streamed = {name: store_pack.open_pack(store, name) for name in store_pack.PACKED_ARRAYS}
    assert store_pack.write_pack(store, force=True) == {"rgb": "written", "flow_feat": "written"}
    for name, first in streamed.items():
        again = store_pack.open_pack(store, name)
        for column in ("keys", "splits", "offsets", "lengths"):
            np.testing.assert_array_equal(getattr(first, column), getattr(again, column))
        np.testing.assert_array_equal(first.frames[...], again.frames[...])
        assert first.stats == again.stats and first.fingerprint == again.fingerprint


def test_import_in_parts_on_processes_equals_one_process(tmp_path, capsys, monkeypatch):
    import pipeline.interop as interop
    import pipeline.store.pack as store_pack
    from pipeline.store.pack import open_pack

    source = make_store(str(tmp_path / "src.zarr"), flow_features=True, views=2, lengths=(3, 9))
    h5_path = tmp_path / "s.h5"
    run_cli(capsys, ["export", source.url, str(h5_path)])
    one = FeatureStore.open(str(interop.import_hdf5(h5_path, str(tmp_path / "one.zarr")).target))
    monkeypatch.setattr(interop, "VIDEOS_PER_PROCESS", 10)
    monkeypatch.setattr(interop, "usable_cpus", lambda: 3.0)  # 3 parts whatever this machine has
    monkeypatch.setattr(store_pack, "PACK_CHUNK_BYTES", 2 * 16 * 2 * 40)  # 40 frames a chunk: parts write
    # whole chunks of their own and share those across their bounds
    events = []
    result = interop.import_hdf5(h5_path, str(tmp_path / "three.zarr"), progress=events.append)
    seen = [e.item for e in events if isinstance(e, Advanced) and e.task == "import"]
    three = FeatureStore.open(result.target)
    assert result.done == len(seen) == len(set(seen)) == 88 and sorted(seen) == sorted(one.complete_ids())
    for store in (one, three):  # the index made from the rows the parts wrote is what the groups say
        scanned = store._scan_index()
        for column, values in store.index().items():
            np.testing.assert_array_equal(values, scanned[column])
    for video_id in seen:
        assert three.video_attrs(video_id) == one.video_attrs(video_id)
        for name in ("rgb", "flow_feat"):
            np.testing.assert_array_equal(three.read(video_id, name), one.read(video_id, name))
    for name in ("rgb", "flow_feat"):  # chunks shared by two parts were assembled from both
        a, b = open_pack(one, name), open_pack(three, name)
        np.testing.assert_array_equal(a.frames[...], b.frames[...])
        assert a.fingerprint == b.fingerprint and b.frames.chunks[1] <= 40 and b.frames.nchunks > 3
        for split, stats in a.stats.items():
            np.testing.assert_allclose(b.stats[split]["std"], stats["std"], rtol=1e-10)
    main = sys.modules["__main__"]  # a program read from stdin: spawned parts could not start; one process
    monkeypatch.setattr(main, "__file__", "<stdin>", raising=False)
    monkeypatch.setattr(interop, "run_parts", lambda *a: pytest.fail("parts spawned from a stdin program"))
    assert interop.import_hdf5(h5_path, str(tmp_path / "stdin.zarr")).done == 88
    monkeypatch.undo()
    monkeypatch.setattr(interop, "VIDEOS_PER_PROCESS", 10)
    monkeypatch.setattr(interop, "usable_cpus", lambda: 3.0)
    with h5py.File(h5_path, "a") as h5:  # a bad video in the last part: its error, as one process gives it
        key = sorted(h5["videos"])[-1]
        del h5[f"videos/{key}/rgb"]
        h5[f"videos/{key}/rgb"] = np.zeros((2, 6, 7), np.float16)
        for axis, dim in enumerate(("view", "time", "channel")):
            h5[f"videos/{key}/rgb"].dims[axis].label = dim
    with pytest.raises(StoreError, match=f"videos/{key}/rgb: rgb has per-frame shape"):
        interop.import_hdf5(h5_path, str(tmp_path / "bad.zarr"))


@pytest.mark.parametrize("dtype", ["f2", "f4", ">f4", "u1", "i8", "c8"])
def test_hdf5_values_read_as_hdf5_reads_them_in_every_layout(tmp_path, dtype):
    from pipeline.interop import _h5_values

    values = (np.random.default_rng(0).standard_normal((2, 7, 5)) * 50).astype(dtype)
    layouts = [{}, {"compression": "gzip", "shuffle": True, "chunks": values.shape},  # export's own: inflated here
               {"compression": "gzip", "chunks": values.shape}, {"compression": "gzip", "shuffle": True, "chunks": (1, 7, 5)},
               {"compression": "lzf", "chunks": values.shape}, {"shuffle": True, "chunks": values.shape}]
    with h5py.File(tmp_path / "v.h5", "w") as h5:
        for i, layout in enumerate(layouts):
            dataset = h5.create_dataset(str(i), data=values, **layout)
            read = _h5_values(dataset.id)
            assert read.dtype == values.dtype and read.tobytes() == values.tobytes(), layout


def test_import_from_a_script_without_a_main_guard_stops_instead_of_hanging(tmp_path, capsys):
    """Its parts re-run the script on start: refused there (before the re-run could touch the output),
    so the caller gets an error naming the fix, not a hang."""
    import subprocess
    from pathlib import Path

    source = make_store(str(tmp_path / "src.zarr"), lengths=(3, 5))
    run_cli(capsys, ["export", source.url, str(tmp_path / "s.h5")])
    script = tmp_path / "unguarded.py"
    script.write_text(f"""import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
import pipeline.interop as interop
interop.VIDEOS_PER_PROCESS, interop.usable_cpus = 10, lambda: 2.0
interop.import_hdf5({str(tmp_path / "s.h5")!r}, {str(tmp_path / "out.zarr")!r})
""")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and 'if __name__ == "__main__":' in run.stderr, run.stderr[-2000:]
    assert "part 0 of 2" in run.stderr.splitlines()[-1], run.stderr[-2000:]


def test_hdf5_round_trip_keeps_flow_attrs_hostile_ids_and_failures(tmp_path, capsys):
    source = synthetic_store(str(tmp_path / "src.zarr"))
    h5_path, back = tmp_path / "x.h5", str(tmp_path / "back.zarr")
    run_cli(capsys, ["export", source.url, str(h5_path)])
    with h5py.File(h5_path) as h5:
        assert "broken" in [v.decode() for v in h5["index/video_id"][...]]
        assert all("/" not in key and ".." not in key for key in h5["videos"])
    lines = run_cli(capsys, ["import", str(h5_path), "-o", back], code=3)  # the failure carries over
    assert any("failed: broken: VideoError: no frames" in line for line in lines)
    imported = FeatureStore.open(back)
    assert_same_features(imported, source, names=("rgb", "flow", "flow_feat"))
    assert dict(imported.video_group(HOSTILE)["flow"].attrs) == {"bound": 20.0, "quantisation": "uint8"}
    assert tuple(imported.video_group("v0")["flow"].metadata.dimension_names) == ("time", "component", "y", "x")
    assert imported.failures() == source.failures()
    run_cli(capsys, ["export", source.url, str(tmp_path / "rgb.h5"), "--arrays", "rgb", "--compression", "0"])
    with h5py.File(tmp_path / "rgb.h5") as h5:
        assert set(h5["videos/v0"]) == {"rgb", "frame_index"} and h5["videos/v0/rgb"].compression is None


def test_hdf5_bad_inputs(extracted, tmp_path, capsys):
    h5_path = tmp_path / "x.h5"
    run_cli(capsys, ["export", extracted.url, str(h5_path)])
    assert one_error(capsys, ["export", extracted.url, str(h5_path)]).endswith("exists; pick another output or --overwrite")
    run_cli(capsys, ["export", extracted.url, str(h5_path), "--overwrite"])
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["features"] = np.zeros((3, 4))
    assert "not an stpipe HDF5 export" in one_error(capsys, ["import", str(tmp_path / "other.h5"), "-o", str(tmp_path / "o.zarr")])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    assert "cannot read HDF5" in one_error(capsys, ["import", str(tmp_path / "junk.h5"), "-o", str(tmp_path / "j.zarr")])
    with h5py.File(h5_path, "a") as h5:  # one video's features of another width
        del h5["videos/moving_left_001/rgb"]
        h5["videos/moving_left_001/rgb"] = np.zeros((1, 6, 7), np.float16)
        for axis, dim in enumerate(("view", "time", "channel")):
            h5["videos/moving_left_001/rgb"].dims[axis].label = dim
    line = one_error(capsys, ["import", str(h5_path), "-o", str(tmp_path / "m.zarr")])
    assert "videos/moving_left_001/rgb" in line and "(7,)" in line and "(64,)" in line
    # checked as each video is read (a pass of its own cost ~0.25 ms a video): the videos before the
    # first that differs stay written, all of one width; no pack is marked complete
    from pipeline.store.pack import open_pack

    partial = FeatureStore.open(str(tmp_path / "m.zarr"))
    done = partial.complete_ids()
    assert 0 < len(done) < 4 and len({partial.read(v, "rgb").shape[2] for v in done}) == 1
    assert open_pack(partial, "rgb") is None
    assert "no feature store here" in one_error(capsys, ["export", str(tmp_path / "nothing.zarr"), str(tmp_path / "n.h5")])


# ---- .npy -------------------------------------------------------------------------------------


def write_npy(folder, arrays: dict[str, np.ndarray]):
    folder.mkdir(parents=True, exist_ok=True)
    for video_id, values in arrays.items():
        np.save(folder / f"{video_id}.npy", values)
    return folder


def test_npy_import_equals_the_extraction_and_stage_two_reads_it(demo, extracted, tmp_path, capsys):
    rgb = {v: extracted.read(v, "rgb")[0].astype(np.float32) for v in VIDEOS}  # (T, D) as other tools write
    folder = write_npy(tmp_path / "rgb", rgb)
    flow = write_npy(tmp_path / "flow", {v: x[1:, :16] * 2 for v, x in rgb.items()})
    url = str(tmp_path / "npy.zarr")
    out = run_cli(capsys, ["import", str(folder), "-m", str(demo), "--flow-dir", str(flow), "--backbone", "tiny",
                           "-o", url])
    assert "4 imported, 0 already complete, 0 failed of 4 videos" in out
    store = FeatureStore.open(url)
    index, want = store.index(), extracted.index()
    for column in ("video_id", "label", "split", "num_frames", "status"):
        assert list(index[column]) == list(want[column])
    for video_id in VIDEOS:
        np.testing.assert_array_equal(store.read(video_id, "rgb"), extracted.read(video_id, "rgb"))
        assert store.read(video_id, "flow_feat").shape == (1, 5, 16)
        attrs = store.video_attrs(video_id)
        assert attrs["frame_index"] == list(range(6)) and attrs["complete"] is True
    meta = store.meta
    assert meta["classes"] == extracted.classes and meta["manifest_sha256"] == extracted.meta["manifest_sha256"]
    assert meta["backbone"]["name"] == "tiny" and meta["backbone"]["dim"] == 64 and meta["backbone"]["features"] == "pooled"
    assert meta["flow"]["backbone"]["dim"] == 16 and meta["origin"] == f"imported from {folder} (per-video .npy)"
    assert "origin    imported from" in run_cli(capsys, ["inspect", url])
    data = pytest.importorskip("pipeline.training.data")
    ours, theirs = data.load_split(store, "train"), data.load_split(extracted, "train")
    assert list(ours.video_ids) == list(theirs.video_ids) and list(ours.labels) == list(theirs.labels)
    np.testing.assert_array_equal(ours.streams["rgb"].frames, theirs.streams["rgb"].frames)


def test_npy_spatial_maps_from_manifest_paths(demo, tmp_path, capsys):
    rng = np.random.default_rng(1)
    arrays = {v: rng.normal(size=(3 + i, 4, 2, 2)).astype(np.float32) for i, v in enumerate(VIDEOS)}
    write_npy(tmp_path / "maps", arrays)
    lines = demo.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    manifest = tmp_path / "npy.csv"  # the manifest's paths are the .npy files themselves
    manifest.write_text("\n".join([lines[0], *(",".join([r[0], f"maps/{r[0]}.npy", *r[2:]]) for r in rows)]) + "\n")
    (tmp_path / "npy.classes.txt").write_text(demo.with_name("small.classes.txt").read_text())
    run_cli(capsys, ["import", "-m", str(manifest), "-o", str(tmp_path / "maps.zarr")])
    store = FeatureStore.open(str(tmp_path / "maps.zarr"))
    for video_id, values in arrays.items():
        rgb = store.video_group(video_id)["rgb"]
        assert tuple(rgb.metadata.dimension_names) == ("view", "time", "channel", "y", "x")
        np.testing.assert_array_equal(rgb[...], values.astype(np.float16)[None])
        assert store.video_attrs(video_id)["num_frames"] == values.shape[0]
    assert store.meta["backbone"]["features"] == "spatial" and store.meta["backbone"]["spatial_size"] == [2, 2]


def test_npy_missing_and_bad_values_are_recorded_failures(demo, tmp_path, capsys):
    arrays = {v: np.ones((4, 8), np.float32) * i for i, v in enumerate(VIDEOS)}
    arrays[VIDEOS[1]][2, 3] = np.nan
    folder = write_npy(tmp_path / "f", arrays)
    (folder / f"{VIDEOS[2]}.npy").unlink()
    url = str(tmp_path / "s.zarr")
    lines = run_cli(capsys, ["import", str(folder), "-m", str(demo), "-o", url], code=3)
    assert any(f"failed: {VIDEOS[2]}: missing features file {folder / VIDEOS[2]}.npy" in line for line in lines)
    assert any(f"failed: {VIDEOS[1]}: " in line and "NaN or infinite" in line for line in lines)
    store = FeatureStore.open(url)
    index = store.index()
    status = dict(zip(index["video_id"].tolist(), index["status"].tolist()))
    assert status == {VIDEOS[0]: "complete", VIDEOS[1]: "failed", VIDEOS[2]: "failed", VIDEOS[3]: "complete"}
    np.save(folder / f"{VIDEOS[2]}.npy", np.ones((4, 8), np.float32))  # fix it and re-run: resumes
    lines = run_cli(capsys, ["import", str(folder), "-m", str(demo), "-o", url], code=3)
    assert len([line for line in lines if "failed:" in line]) == 1
    assert FeatureStore.open(url).is_complete(VIDEOS[2])


@pytest.mark.parametrize(("bad", "expected"), [
    (np.ones((5,), np.float32), "features of shape (5,); expected (T, D) vectors or (T, C, H, W) maps"),
    (np.ones((5, 4, 3), np.float32), "features of shape (5, 4, 3); expected"),
    (np.ones((5, 9), np.float32), "per-frame shape (9,)"),
    (np.array([["a", "b"]]), "need at least one time step of numbers"),
    (np.ones((0, 8), np.float32), "need at least one time step of numbers"),
])
def test_npy_bad_shapes_are_one_line_errors(demo, tmp_path, capsys, bad, expected):
    folder = write_npy(tmp_path / "f", {v: np.ones((4, 8), np.float32) for v in VIDEOS})
    np.save(folder / f"{VIDEOS[3]}.npy", bad)
    line = one_error(capsys, ["import", str(folder), "-m", str(demo), "-o", str(tmp_path / "s.zarr")])
    assert f"{folder / VIDEOS[3]}.npy" in line and expected in line
    assert not (tmp_path / "s.zarr").exists()


def test_npy_source_errors(demo, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error(capsys, ["import", str(empty), "-m", str(demo), "-o", str(tmp_path / "s.zarr")])
    assert "no feature files found for any of the 4 manifest entries" in line and str(empty) in line
    assert "needs a manifest" in one_error(capsys, ["import", str(empty), "-o", str(tmp_path / "s.zarr")])
    assert "no such file or folder" in one_error(capsys, ["import", str(tmp_path / "nope"), "-o", str(tmp_path / "s.zarr")])
    (empty / "x.npy").write_bytes(b"garbage")
    line = one_error(capsys, ["import", str(empty), "-m", str(demo), "--name-template", "x.npy", "-o", "s.zarr"])
    assert "name_template must contain {video_id}" in line
