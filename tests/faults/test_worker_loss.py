"""Ray: a worker process killed (os.kill on the actor's PID) and a whole node removed, mid-run.

A simulated 3-node cluster (`ray.cluster_utils.Cluster`, one CPU per node, one extract worker per
node). When the first videos are reported done, the test SIGKILLs the worker process on the head
node (found as a descendant of that node's raylet whose title names the actor) and removes
another node without a graceful shutdown. The run must finish every video exactly once, equal to
an in-process run, with the lost work visibly re-queued.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fault_tools import assert_identical_store

import pipeline.distributed.extract as distributed
from pipeline.demo_data import DemoDataConfig, generate
from pipeline.extraction import ExtractConfig
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


def _ppid_and_title(pid: int) -> tuple[int, bytes]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1]), Path(f"/proc/{pid}/cmdline").read_bytes()


def actor_pids(raylet_pid: int, title: bytes = b"ExtractWorker") -> list[int]:
    """PIDs of the actor's processes under this raylet (only this test's cluster, never anyone else's)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent, cmdline = _ppid_and_title(int(entry))
            while parent > 1 and parent != raylet_pid:
                parent = _ppid_and_title(parent)[0]
        except OSError:
            continue
        if parent == raylet_pid and title in cmdline:
            found.append(int(entry))
    return found


def test_worker_killed_and_node_removed_mid_run(longer_demo, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    reference = tmp_path / "local.zarr"
    extract.run(config(longer_demo, reference, executor="local"))
    requeued: list[str] = []
    original = distributed._requeue_or_fail

    def counting(cfg, batch, queue, total, progress, reason):
        requeued.extend(job.video_id for job in batch)
        return original(cfg, batch, queue, total, progress, reason)

    monkeypatch.setattr(distributed, "_requeue_or_fail", counting)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    events, killed = [], []
    try:
        cluster.add_node(num_cpus=1)
        doomed = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING")
        head_raylet = cluster.head_node.all_processes["raylet"][0].process.pid

        def progress(event):
            if not isinstance(event, Advanced):  # videos only
                return
            events.append(event)
            if len(events) == 1:
                victims = actor_pids(head_raylet)
                assert len(victims) == 1, victims
                os.kill(victims[0], signal.SIGKILL)
                killed.append(victims[0])
                cluster.remove_node(doomed, allow_graceful=False)

        # one video a call: work stays queued behind every worker (with 4 a call, 3 workers x 2 calls took all 20
        # videos at once, and on a fast host both faults could land after the victims' calls had finished)
        result = extract.run(config(longer_demo, tmp_path / "ray.zarr", executor="ray", workers=3, videos_in_flight=1),
                             progress=progress)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert killed and not Path(f"/proc/{killed[0]}").exists()
    assert (result.done, result.failed) == (20, 0)
    done = [e.item.video_id for e in events if e.item.kind == "done"]
    assert len(done) == 20 and len(set(done)) == 20  # every video reported exactly once
    assert requeued, "neither fault hit work in flight"
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
