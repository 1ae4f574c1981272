"""Ray: a worker process killed (os.kill on the actor's PID) and a whole node removed, mid-run.

A simulated 3-node cluster (`ray.cluster_utils.Cluster`, one CPU per node, one extract worker per
node). Every worker is held at its first video's `begin` (`STPIPE_FAULT_GATE`, pipeline/faults.py),
so the faults land on work certainly in flight, not on a guess of timing (a fast worker did all 20
videos in 0.5 s while the others were still starting). The test SIGKILLs the worker process on the
head node (found as a descendant of that node's raylet whose title names the actor), removes another
node without a graceful shutdown, then opens the gate. The run must finish every video exactly
once, equal to an in-process run, with the lost work visibly re-queued.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fault_tools import assert_identical_store
from ray_gate import (
    GatedFaults,
    count_requeued,
    gated_runtime_env,
    held_at_gate,
    raylet_pid,
    remove_node_and_its_worker,
)

from pipeline.demo_data import DemoDataConfig, generate
from pipeline.extraction import ExtractConfig, VideoJob
from pipeline.progress import Advanced
from stages import extract

ray = pytest.importorskip("ray")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def longer_demo(tmp_path_factory):
    """20 videos of 40 frames: a worker's video takes long enough to be cut in the middle."""
    out = tmp_path_factory.mktemp("demo40")
    generate(DemoDataConfig(out=str(out), videos_per_class=2, frames=40, size=32))
    return out


def config(demo: Path, store: Path, **kw) -> ExtractConfig:
    return ExtractConfig(manifest=str(demo / "manifest.csv"), output=str(store), backbone="tiny", weights="none",
                         batch_size=8, chunk_frames=8, **kw)


def test_worker_killed_and_node_removed_mid_run(longer_demo, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    reference = tmp_path / "local.zarr"
    extract.run(config(longer_demo, reference, executor="local"))
    requeued = count_requeued(monkeypatch)
    gate = tmp_path / "gate"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    events, killed = [], []
    try:
        cluster.add_node(num_cpus=1)
        doomed = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING", runtime_env=gated_runtime_env(gate))

        def faults() -> None:
            victim = held_at_gate(gate, raylet_pid(cluster.head_node))
            other = held_at_gate(gate, raylet_pid(doomed))
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            remove_node_and_its_worker(cluster, doomed, other)

        def progress(event):
            if isinstance(event, Advanced):  # videos only
                events.append(event)

        # one video a call: each held worker has its first video at the gate and a second call queued
        with GatedFaults(gate, faults) as injected:
            result = extract.run(config(longer_demo, tmp_path / "ray.zarr", executor="ray", workers=3,
                                        videos_in_flight=1), progress=progress)
    finally:
        ray.shutdown()
        cluster.shutdown()
    injected.check()
    assert killed and not Path(f"/proc/{killed[0]}").exists()
    assert (result.done, result.failed) == (20, 0)
    done = [e.item.video_id for e in events if isinstance(e.item, VideoJob)]  # failures carry a store Failure
    assert len(done) == 20 and len(set(done)) == 20  # every video reported exactly once
    # each victim held one video at the gate and had one more call queued: both calls of both are lost
    assert len(set(requeued)) == 4, requeued
    print(f"worker {killed[0]} killed and a node removed: {len(set(requeued))} videos re-queued, "
          f"{result.done}/20 done, 0 failed")
    assert_identical_store(reference, tmp_path / "ray.zarr")


def test_workers_killed_while_starting_stop_the_run(longer_demo, tmp_path):
    """Every extract worker SIGKILLed in its constructor (fault point `worker_start`, set in the
    workers' environment only): after the replacements die too, the run stops with one line instead
    of recording every video as failed, and a re-run that can start extracts everything."""
    from pipeline.errors import WorkerStartError
    from pipeline.store import FeatureStore

    store = tmp_path / "s.zarr"
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"STPIPE_FAULT": "worker_start:1"}})
    try:
        with pytest.raises(WorkerStartError) as info:
            extract.run(config(longer_demo, store, executor="ray"))
    finally:
        ray.shutdown()
    message = str(info.value)
    assert message.startswith("Ray workers could not start: ") and "\n" not in message
    assert "no live Ray worker left" not in message
    opened = FeatureStore.open(str(store))
    assert opened.complete_ids() == set() and not list(opened.root["failures"].group_keys())
    again = extract.run(config(longer_demo, store, executor="local"))
    assert (again.done, again.failed, again.skipped) == (20, 0, 0)
