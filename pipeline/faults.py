"""Fault injection for the reliability suite (`tests/faults/`).

`STPIPE_FAULT=<point>:<n>` makes the process SIGKILL itself the n-th time it reaches
`fault_point("<point>")`: a crash at an exact moment (during a chunk write, before `complete`,
inside index consolidation, between a checkpoint's temp file and its rename) that a test can
reproduce. Unset, as always outside tests, a call is two string comparisons.

`STPIPE_FAULT_GATE=<point>:<path>` holds the process at that point until `<path>` exists, after
creating `<path>.<pid>`: a test sees which processes are held mid-work and acts on them (kills
one, removes its node) at a moment that is certain, not timed, then creates `<path>` to let all go.

Points: begin, write, finish, failure, index (stage one store writes); worker_start (a Ray extract
worker's constructor; set it in the workers' environment); checkpoint (stage two).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

_POINT, _, _COUNT = os.environ.get("STPIPE_FAULT", "").partition(":")
_GATE_POINT, _, _GATE = os.environ.get("STPIPE_FAULT_GATE", "").partition(":")
_hits = 0
_lock = threading.Lock()


def fault_point(name: str) -> None:
    """SIGKILL this process here if STPIPE_FAULT names this point and its hit count is reached;
    wait here while STPIPE_FAULT_GATE names this point and its gate file is missing."""
    if name == _GATE_POINT:
        _wait_at_gate(Path(_GATE))
    if name != _POINT:
        return
    global _hits
    with _lock:
        _hits += 1
        if _hits == int(_COUNT or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def _wait_at_gate(gate: Path) -> None:
    if gate.exists():
        return
    gate.with_name(f"{gate.name}.{os.getpid()}").touch()
    while not gate.exists():
        time.sleep(0.01)
