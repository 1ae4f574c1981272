"""The store at dataset scale: one write per document, zarr's own bytes, resume/index from one pass,
the pack read by stage two, stores in the format written before all this, and CPU thread sizing."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr

from cli import main
from pipeline import cpus
from pipeline.store import FeatureStore, video_key
from pipeline.store.io import StoreIO, checksummed, feature_compressor
from pipeline.store.pack import open_pack, pack_is_fresh, write_pack
from pipeline.training.data import load_split

PROVENANCE = {"config_hash": "h", "classes": ["a", "b", "c"], "config": {}}


def _video(i: int, *, frames: int | None = None, spatial: bool = False) -> np.ndarray:
    rng = np.random.default_rng(i)
    t = frames or int(rng.integers(3, 14))
    shape = (2, t, 8, 3, 3) if spatial else (1, t, 16)
    return rng.standard_normal(shape).astype(np.float16)


def _write(store: FeatureStore, ids, *, spatial: bool = False) -> dict[str, np.ndarray]:
    written = {}
    for i in ids:
        x = _video(i, spatial=spatial)
        writer = store.begin_video(f"v{i:04d}", {"label_index": i % 3, "label": "abc"[i % 3],
                                                 "split": ("train", "train", "val")[i % 3], "fps": 12.0})
        dims = ("view", "time", "channel", "y", "x")[: x.ndim]
        writer.write("rgb", x, dims=dims, time_axis=1)
        writer.finish(num_frames=x.shape[1], frame_index=list(range(x.shape[1])))
        written[f"v{i:04d}"] = x
    return written


class CountingIO(StoreIO):
    """Records every whole-object write and document read."""

    def __init__(self, url):
        super().__init__(url)
        self.puts: list[tuple[str, bytes]] = []
        self.reads: list[str] = []

    def put(self, rel, data, **kwargs):
        self.puts.append((rel, data))
        super().put(rel, data, **kwargs)

    def read_json(self, rels):
        for rel, doc in super().read_json(rels):
            self.reads.append(rel)
            yield rel, doc


def test_a_video_is_four_writes_attrs_in_one_and_complete_last(tmp_path):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    store.io = CountingIO(store.url)
    _write(store, [0])
    rels = [rel for rel, _ in store.io.puts]
    assert rels == ["videos/v0000/zarr.json", "videos/v0000/rgb/zarr.json", "videos/v0000/rgb/c.0.0.0",
                    "videos/v0000/zarr.json"]
    first, last = (json.loads(data)["attributes"] for rel, data in store.io.puts if rel.endswith("v0000/zarr.json"))
    assert first == {"label_index": 0, "label": "a", "split": "train", "fps": 12.0, "video_id": "v0000",
                     "complete": False}  # born with every attribute
    assert last["complete"] is True and last["num_frames"] == first_len(store)


def first_len(store):
    return int(store.read("v0000", "rgb").shape[1])


def test_documents_and_chunks_are_what_zarr_writes(tmp_path):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    x = _video(1, frames=37)
    writer = store.begin_video("a/b", {"split": "train"})
    writer.write("rgb", x, dims=("view", "time", "channel"), time_axis=1, attrs={"bound": 20.0})
    flow = writer.create("flow", shape=(40, 2, 4, 4), dtype=np.uint8, dims=("time", "component", "y", "x"),
                         time_axis=0)
    fields = np.random.default_rng(0).integers(0, 255, (40, 2, 4, 4)).astype(np.uint8)
    flow[0:40] = fields
    flow.resize((33, 2, 4, 4))  # a video that ended early
    writer.finish(num_frames=37)
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w")
    z = ref.create_array("rgb", shape=x.shape, dtype=x.dtype, chunks=(1, 37, 16), compressors=checksummed(feature_compressor()),
                         chunk_key_encoding={"name": "default", "separator": "."},
                         dimension_names=("view", "time", "channel"), fill_value=0, attributes={"bound": 20.0})
    z[...] = x
    ours = tmp_path / "s.zarr" / "videos" / video_key("a/b") / "rgb"
    assert json.loads((ours / "zarr.json").read_text()) == json.loads((tmp_path / "ref.zarr" / "rgb" / "zarr.json").read_text())
    assert (ours / "c.0.0.0").read_bytes() == (tmp_path / "ref.zarr" / "rgb" / "c.0.0.0").read_bytes()
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")[f"videos/{video_key('a/b')}"]
    assert np.array_equal(group["rgb"][...], x) and np.array_equal(group["flow"][...], fields[:33])
    assert dict(group.attrs)["complete"] is True


def test_dask_opens_per_video_arrays_and_the_pack(tmp_path):
    da = pytest.importorskip("dask.array")
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    written = _write(store, range(6))
    store.write_index()
    write_pack(store)
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert np.array_equal(da.from_zarr(root["videos/v0001/rgb"]).compute(), written["v0001"])
    frames = da.from_zarr(root["pack/rgb/frames"])
    assert frames.shape == (1, sum(x.shape[1] for x in written.values()), 16)
    xr = pytest.importorskip("xarray")
    opened = xr.open_zarr(str(tmp_path / "s.zarr"), group="pack/rgb", consolidated=False)
    assert opened["frames"].dims == ("view", "frame", "channel")
    video = xr.open_zarr(str(tmp_path / "s.zarr"), group="videos/v0001", consolidated=False)
    assert video["rgb"].dims == ("view", "time", "channel")
    assert np.array_equal(video["rgb"].values, written["v0001"])


def test_resume_scan_reads_only_groups_the_index_does_not_know(tmp_path):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    _write(store, range(20))
    store.write_index()
    store.invalidate_index()  # as a new run starts
    store.io = CountingIO(store.url)
    _write(store, range(20, 23))
    writer = store.begin_video("v0099", {"split": "train"})  # killed mid-video
    store.io.reads.clear()
    done = store.complete_ids()
    assert done == {f"v{i:04d}" for i in range(23)}
    assert sorted(store.io.reads) == [f"videos/v{i:04d}/zarr.json" for i in (20, 21, 22, 99)]
    del writer
    # a group changed by hand after the index was written is read again (local disks)
    group = zarr.open_group(store.url, mode="r+")["videos/v0003"]
    group.attrs["complete"] = False
    assert "v0003" not in store.complete_ids()
    assert store._scan_index()["status"].tolist() == store.write_index()["status"].tolist()


def test_index_is_not_rewritten_when_nothing_changed(tmp_path):
    path = tmp_path / "s.zarr"
    store = FeatureStore.create(str(path), provenance=PROVENANCE)
    _write(store, range(5))
    store.write_index()
    chunk = path / "index" / "video_id" / "c" / "0"
    before = chunk.stat().st_mtime_ns
    store.invalidate_index()
    FeatureStore.open(str(path), mode="r+").write_index()
    assert chunk.stat().st_mtime_ns == before  # only marked complete again
    assert zarr.open_group(str(path), mode="r")["index"].attrs["complete"] is True
    _write(store, [5])
    assert len(FeatureStore.open(str(path), mode="r+").write_index()["video_id"]) == 6


def test_the_index_is_read_once_per_store_object(tmp_path, monkeypatch):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    _write(store, range(6))
    store.write_index()
    opened = FeatureStore.open(store.url)
    calls = []
    real = opened._stored_index
    monkeypatch.setattr(opened, "_stored_index", lambda: calls.append(1) or real())
    for split in ("train", "val"):
        load_split(opened, split)
    opened.index()
    assert len(calls) == 1


def test_resume_memory_is_small_per_video(tmp_path):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    n = 1500
    _write(store, range(n))
    store.write_index()
    opened = FeatureStore.open(store.url, mode="r+")
    tracemalloc.start()
    done = opened.complete_ids()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(done) == n
    assert peak / n < 1500, f"{peak / n:.0f} bytes per video"  # the ids and their index rows, nothing per group


@pytest.mark.parametrize("spatial", [False, True])
def test_stage_two_reads_the_pack_and_gets_the_same_features(tmp_path, spatial, monkeypatch):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    _write(store, range(30), spatial=spatial)
    store.write_index()
    per_video = {s: load_split(FeatureStore.open(store.url), s, pooled=True) for s in ("train", "val")}
    assert write_pack(store) == {"rgb": "written", "flow_feat": "absent"}
    assert write_pack(store) == {"rgb": "fresh", "flow_feat": "absent"}
    opened = FeatureStore.open(store.url)
    import pipeline.training.data as data

    monkeypatch.setattr(data, "_layout", lambda *a, **k: pytest.fail("read per video despite the pack"))
    for split, want in per_video.items():
        got = load_split(opened, split, pooled=True)
        a, b = want.streams["rgb"], got.streams["rgb"]
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.offsets, b.offsets)
        assert np.array_equal(a.lengths, b.lengths) and a.pool == b.pool and a.frame_shape == b.frame_shape
        assert list(want.keys) == list(got.keys) and np.array_equal(want.labels, got.labels)


def test_a_stale_pack_is_not_used_and_is_rebuilt(tmp_path):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    _write(store, range(9))
    store.write_index()
    write_pack(store)
    _write(store, range(9, 12))  # videos added: the pack lacks them
    store.write_index()
    assert not pack_is_fresh(store, "rgb")
    fresh = load_split(FeatureStore.open(store.url), "train")  # per-video fallback
    assert len(fresh) == 8
    assert write_pack(store)["rgb"] == "written"
    assert pack_is_fresh(store, "rgb") and len(open_pack(store, "rgb").keys) == 12
    again = load_split(FeatureStore.open(store.url), "train")
    assert np.array_equal(again.streams["rgb"].frames, fresh.streams["rgb"].frames)


def test_pack_command(tmp_path, capsys):
    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    _write(store, range(4))
    main(["pack", str(tmp_path / "s.zarr")])
    assert "rgb: written" in capsys.readouterr().out
    main(["pack", str(tmp_path / "s.zarr")])
    assert "rgb: already up to date" in capsys.readouterr().out
    main(["inspect", str(tmp_path / "s.zarr")])
    assert "pack      rgb fresh\n" in capsys.readouterr().out


def _old_format_store(path: Path) -> dict[str, np.ndarray]:
    """A store as the code before this change wrote it: zarr calls, attributes key by key, no pack."""
    root = zarr.open_group(str(path), mode="w", attributes={"stpipe": {**PROVENANCE, "version": 1}})
    videos = root.require_group("videos")
    root.require_group("failures")
    written = {}
    for i in range(8):
        x = _video(i)
        group = videos.create_group(f"v{i:04d}", overwrite=True)
        for key, value in {"label_index": i % 3, "split": ("train", "train", "val")[i % 3],
                           "video_id": f"v{i:04d}", "complete": False}.items():
            group.attrs[key] = value
        array = group.create_array("rgb", shape=x.shape, dtype=x.dtype, chunks=x.shape, compressors=feature_compressor(),
                                   dimension_names=("view", "time", "channel"), fill_value=0)
        array[...] = x
        group.attrs["num_frames"] = x.shape[1]
        if i != 7:  # the last one killed before its complete mark
            group.attrs["complete"] = True
        written[f"v{i:04d}"] = x
    return written


def test_a_store_in_the_earlier_format_opens_resumes_and_packs(tmp_path):
    path = tmp_path / "old.zarr"
    written = _old_format_store(path)
    store = FeatureStore.open(str(path), mode="r+")
    assert store.complete_ids() == {f"v{i:04d}" for i in range(7)}
    _write(store, [7])  # the resumed video, written the new way
    index = store.write_index()
    assert list(index["status"]) == ["complete"] * 8
    assert write_pack(store)["rgb"] == "written"
    train = load_split(FeatureStore.open(str(path)), "train")
    rows = [written[k] if k != "v0007" else _video(7) for k in train.keys]
    assert np.array_equal(train.streams["rgb"].frames, np.concatenate(rows, axis=1))


def test_the_writer_keeps_each_videos_writes_in_order_in_parallel_lanes():
    """Extract's many writes per video (keyed) and import's one write per video (no key) share one
    writer: a video's writes run in order, every result comes back on the caller's thread."""
    import threading
    import time

    from pipeline.store.writer import Writer

    steps: dict[str, list[int]] = {}
    threads, results, caller = set(), [], threading.get_ident()

    def write(video, step):
        time.sleep(0.002 * ((step + ord(video[0])) % 3))
        steps.setdefault(video, []).append(step)
        threads.add(threading.get_ident())
        return video, step

    def done(result):
        assert threading.get_ident() == caller
        results.append(result)

    with Writer(4, on_done=done, in_flight=2) as writer:
        for step in range(4):
            for video in "abcdefgh":
                writer.submit(write, video, step, key=video)
        writer.submit(write, "whole", 0)
    assert steps == {**{video: [0, 1, 2, 3] for video in "abcdefgh"}, "whole": [0]}
    assert sorted(results) == sorted((video, step) for video, done_steps in steps.items() for step in done_steps)
    assert len(threads) > 1 and caller not in threads


def test_failures_are_one_write_and_cleared(tmp_path):
    from pipeline.store import Failure

    store = FeatureStore.create(str(tmp_path / "s.zarr"), provenance=PROVENANCE)
    store.record_failure(Failure("x/y", "p", "extract", "boom", 2))
    assert store.failures() == [Failure("x/y", "p", "extract", "boom", 2)]
    assert store.index()["status"].tolist() == ["failed"]
    store.clear_failure("x/y")
    assert store.failures() == []


# ---- CPU threads ------------------------------------------------------------------------------


def test_threads_follow_the_cpus_the_process_may_use(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpus, "_cgroup_quota", lambda: None)
    monkeypatch.setattr(cpus, "busy_elsewhere", lambda: 0.0)
    assert cpus.usable_cpus() == 4 and cpus.compute_threads() == 4
    monkeypatch.setattr(cpus, "_cgroup_quota", lambda: 2.5)  # docker --cpus 2.5
    assert cpus.usable_cpus() == 2.5 and cpus.compute_threads() == 2
    assert cpus.compute_threads(1) == 1 and cpus.compute_threads(8) == 2  # --cpus-per-trial, capped
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray task's num_cpus
    assert cpus.compute_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(cpus, "busy_elsewhere", lambda: 1.7)  # other processes keep ~2 CPUs busy
    assert cpus.compute_threads() == 1
    monkeypatch.setattr(cpus, "busy_elsewhere", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 1.0, 1.0))
    assert cpus.compute_threads() == 2


def test_busy_cpus_are_other_processes_now_not_this_one(monkeypatch):
    """Busy CPUs = non-idle ticks of the CPUs this process may use over the window, less this
    process's own CPU time; measured once per REUSE_S."""
    ticks = iter([1000, 1000 + 150])  # 1.5 CPU-seconds of non-idle ticks in 1 s (100 ticks a second)
    own = iter([10.0, 10.7])  # of which 0.7 s were this process's own threads
    clock = iter([100.0, 101.0, 101.0])
    monkeypatch.setattr(cpus, "_last", None)
    monkeypatch.setattr(cpus, "_busy_ticks", lambda cpus_: next(ticks))
    monkeypatch.setattr(cpus, "_own_seconds", lambda: next(own))
    monkeypatch.setattr(cpus.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(cpus.time, "sleep", lambda s: None)
    monkeypatch.setattr(cpus.os, "sysconf", lambda name: 100)
    assert abs(cpus.busy_elsewhere() - 0.8) < 1e-9
    monkeypatch.setattr(cpus.time, "monotonic", lambda: 120.0)
    assert abs(cpus.busy_elsewhere() - 0.8) < 1e-9  # reused within REUSE_S: no second read
    monkeypatch.setattr(cpus, "_busy_ticks", lambda cpus_: None)
    monkeypatch.setattr(cpus.time, "monotonic", lambda: 200.0)
    assert cpus.busy_elsewhere() is None  # no /proc/stat


def test_a_busy_loop_elsewhere_counts_at_once_and_own_work_does_not(monkeypatch):
    """On the real /proc/stat (skipped when the machine has no idle CPU to see the difference in)."""
    import subprocess
    import sys
    import threading
    import time

    def measure() -> float:
        monkeypatch.setattr(cpus, "_last", None)
        return cpus.busy_elsewhere(window=0.5)

    quiet = measure()
    if quiet is None or cpus.usable_cpus() - quiet < 1.5:
        pytest.skip(f"no /proc/stat or too busy to measure here ({quiet} CPUs busy)")
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert measure() - quiet > 0.5
    finally:
        loop.kill()
        loop.wait()
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        assert measure() - quiet < 0.5
    finally:
        stop.set()
        spinner.join()


def test_the_local_ablation_executor_honours_cpus_per_trial(monkeypatch):
    import torch

    from pipeline.ablation.runner import LocalExecutor

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 4.0)
    seen = []
    before = torch.get_num_threads()
    try:
        executor = LocalExecutor(lambda trial, shared, device: seen.append(torch.get_num_threads()) or {},
                                 None, cpus_per_trial=1)
        executor.submit("t")
        executor.next_done()
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
