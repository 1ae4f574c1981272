"""Fault injection for the reliability suite (`tests/faults/`).

`STPIPE_FAULT=<point>:<n>` makes the process SIGKILL itself the n-th time it reaches
`fault_point("<point>")`: a crash at an exact moment (during a chunk write, before `complete`,
inside index consolidation, between a checkpoint's temp file and its rename) that a test can
reproduce. Unset, as always outside tests, a call is one string comparison.

Points: begin, write, finish, failure, index (stage one store writes); worker_start (a Ray extract
worker's constructor; set it in the workers' environment); checkpoint (stage two).
"""

from __future__ import annotations

import os
import signal
import threading

_POINT, _, _COUNT = os.environ.get("STPIPE_FAULT", "").partition(":")
_hits = 0
_lock = threading.Lock()


def fault_point(name: str) -> None:
    """SIGKILL this process here if STPIPE_FAULT names this point and its hit count is reached."""
    if name != _POINT:
        return
    global _hits
    with _lock:
        _hits += 1
        if _hits == int(_COUNT or 1):
            os.kill(os.getpid(), signal.SIGKILL)
