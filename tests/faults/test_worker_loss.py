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
import threading
import time
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


def held_at_gate(gate: Path, raylet_pid: int, timeout: float = 120.0) -> int:
    """PID of the actor under this raylet once it waits at the gate (its marker file exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in actor_pids(raylet_pid):
            if gate.with_name(f"{gate.name}.{pid}").exists():
                return pid
        time.sleep(0.01)
    raise AssertionError(f"no worker under raylet {raylet_pid} reached the gate in {timeout:.0f} s")


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
    gate = tmp_path / "gate"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    events, killed, faults_error = [], [], []

    def faults() -> None:  # beside the driver: it must keep running to start the workers that reach the gate
        try:
            victim = held_at_gate(gate, head_raylet)
            other = held_at_gate(gate, doomed.all_processes["raylet"][0].process.pid)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            cluster.remove_node(doomed, allow_graceful=False)
            # its worker outlives the raylet for a moment: let go now, it could still finish and reply
            deadline = time.monotonic() + 60
            while Path(f"/proc/{other}").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        except BaseException as exc:
            faults_error.append(exc)
        finally:
            gate.touch()

    try:
        cluster.add_node(num_cpus=1)
        doomed = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING",
                 runtime_env={"env_vars": {"STPIPE_FAULT_GATE": f"begin:{gate}"}})
        head_raylet = cluster.head_node.all_processes["raylet"][0].process.pid
        injector = threading.Thread(target=faults, daemon=True)
        injector.start()

        def progress(event):
            if isinstance(event, Advanced):  # videos only
                events.append(event)

        # one video a call: each held worker has its first video at the gate and a second call queued
        result = extract.run(config(longer_demo, tmp_path / "ray.zarr", executor="ray", workers=3, videos_in_flight=1),
                             progress=progress)
        injector.join(timeout=60)
    finally:
        gate.touch()
        ray.shutdown()
        cluster.shutdown()
    assert not faults_error, faults_error[0]
    assert killed and not Path(f"/proc/{killed[0]}").exists()
    assert (result.done, result.failed) == (20, 0)
    done = [e.item.video_id for e in events if e.item.kind == "done"]
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
