"""Stage one on Ray: simulated multi-node clusters and a real `ray start` cluster on 127.0.0.1."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.demo_data import DemoDataConfig, generate
from pipeline.errors import StpipeError
from pipeline.extraction import ExtractConfig
from pipeline.store import FeatureStore
from stages import extract

ray = pytest.importorskip("ray")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    generate(DemoDataConfig(out=str(out), videos_per_class=2, frames=6, size=32))
    return out


def config(demo, store, **kw):
    base = dict(manifest=str(demo / "manifest.csv"), output=str(store), backbone="tiny", weights="none",
                batch_size=8, chunk_frames=4)
    return ExtractConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def local_store(demo, tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "s.zarr"
    extract.run(config(demo, path, executor="local"))
    return FeatureStore.open(str(path))


def assert_same_store(a: FeatureStore, b: FeatureStore):
    ia, ib = a.index(), b.index()
    assert sorted(ia["video_id"]) == sorted(ib["video_id"])
    assert set(ib["status"]) == {"complete"}
    for video_id in ia["video_id"]:
        assert np.array_equal(a.read(video_id, "rgb"), b.read(video_id, "rgb")), video_id
        assert a.video_attrs(video_id)["frame_index"] == b.video_attrs(video_id)["frame_index"]


def test_simulated_three_node_cluster_equals_in_process(demo, tmp_path, local_store):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING")
        result = extract.run(config(demo, tmp_path / "s.zarr", executor="ray", workers=3))
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(nodes) == 3
    assert (result.done, result.failed) == (20, 0)
    assert_same_store(local_store, FeatureStore.open(str(tmp_path / "s.zarr")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_cluster_started_with_ray_start(demo, tmp_path, local_store):
    ray_bin = Path(sys.executable).with_name("ray")
    port = free_port()
    # A HOME of its own: Ray keeps the cluster's auth token in ~/.ray/auth_token, and other Ray
    # sessions on this machine must not swap it under this test.
    env = {**os.environ, "HOME": str(tmp_path / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--port", str(port), "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
         "--include-dashboard=false", "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    pytest.skip("ray start --head did not come up")
                time.sleep(0.5)
        store = tmp_path / "s.zarr"
        run = subprocess.run(
            [sys.executable, "-m", "cli", "extract", "-m", str(demo / "manifest.csv"), "-o", str(store),
             "--backbone", "tiny", "--weights", "none", "--batch-size", "8", "--ray-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1], env=env,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert "20 extracted" in run.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # stops this cluster only (its own process group)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    assert_same_store(local_store, FeatureStore.open(str(store)))


def test_unreachable_address_is_one_clear_line(demo, tmp_path):
    started = time.time()
    with pytest.raises(StpipeError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:\d+"):
        extract.run(config(demo, tmp_path / "s.zarr", executor="ray", ray_address=f"127.0.0.1:{free_port()}"))
    assert time.time() - started < 60


def test_memory_store_needs_the_local_executor(demo):
    with pytest.raises(StpipeError, match="memory:// store lives in one process"):
        extract.run(config(demo, "memory://x.zarr", executor="ray"))


def test_node_removed_mid_run_its_videos_are_redone_elsewhere(demo, tmp_path, local_store):
    from ray.cluster_utils import Cluster

    # one CPU per node: the two workers must sit on different nodes, and no replacement fits anywhere
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    events = []
    try:
        doomed = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING")

        def progress(event):
            events.append(event)
            if len(events) == 4:  # first results are in: take a node away with its worker
                cluster.remove_node(doomed, allow_graceful=False)

        result = extract.run(config(demo, tmp_path / "s.zarr", executor="ray", workers=2), progress=progress)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert (result.done, result.failed) == (20, 0)
    assert sorted(e.video_id for e in events) == sorted(set(e.video_id for e in events))  # each once
    assert_same_store(local_store, FeatureStore.open(str(tmp_path / "s.zarr")))
