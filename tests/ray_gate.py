"""Faults on Ray extract workers that land on work certainly in flight.

Every worker is held at its first video's `begin` (`STPIPE_FAULT_GATE`, pipeline/faults.py) until
the test opens the gate, so a kill or a node removal hits a call that is running, not one that
timing suggests is running (on a fast host one worker did all 20 test videos in 0.5 s while the
others were still starting, and a fault at "the first reported video" hit nothing).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pipeline.distributed.extract as distributed


def gated_runtime_env(gate: Path) -> dict:
    """`ray.init(runtime_env=...)` that holds every worker of the job at the gate."""
    return {"env_vars": {"STPIPE_FAULT_GATE": f"begin:{gate}"}}


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def _ppid_and_title(pid: int) -> tuple[int, bytes]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1]), Path(f"/proc/{pid}/cmdline").read_bytes()


def actor_pids(raylet: int, title: bytes = b"ExtractWorker") -> list[int]:
    """PIDs of the actor's processes under this raylet (only this test's cluster, never anyone else's)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent, cmdline = _ppid_and_title(int(entry))
            while parent > 1 and parent != raylet:
                parent = _ppid_and_title(parent)[0]
        except OSError:
            continue
        if parent == raylet and title in cmdline:
            found.append(int(entry))
    return found


def held_at_gate(gate: Path, raylet: int, timeout: float = 120.0) -> int:
    """PID of the actor under this raylet once it waits at the gate (its marker file exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in actor_pids(raylet):
            if gate.with_name(f"{gate.name}.{pid}").exists():
                return pid
        time.sleep(0.01)
    raise AssertionError(f"no worker under raylet {raylet} reached the gate in {timeout:.0f} s")


def remove_node_and_its_worker(cluster, node, worker: int, timeout: float = 60.0) -> None:
    """Remove the node without a graceful shutdown and wait until its worker is gone: a worker
    outlives its raylet for a moment and, let through the gate then, could still finish and reply."""
    cluster.remove_node(node, allow_graceful=False)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class GatedFaults:
    """Runs `faults()` in a thread beside the driver (which must keep running to start the workers
    that reach the gate), then opens the gate whatever happened; `check()` re-raises its error."""

    def __init__(self, gate: Path, faults: Callable[[], None]):
        self.gate, self.faults, self.error = gate, faults, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.faults()
        except BaseException as exc:  # reported by check(), on the test's thread
            self.error = exc
        finally:
            self.gate.touch()

    def __enter__(self) -> GatedFaults:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.gate.touch()  # a run that ended early must not leave workers held
        self.thread.join(timeout=60)

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def count_requeued(monkeypatch) -> list[str]:
    """The video ids the Ray driver re-queues from lost calls, in order."""
    requeued: list[str] = []
    original = distributed._requeue_or_fail

    def counting(cfg, batch, queue, total, progress, reason):
        requeued.extend(job.video_id for job in batch)
        return original(cfg, batch, queue, total, progress, reason)

    monkeypatch.setattr(distributed, "_requeue_or_fail", counting)
    return requeued
