"""Keep freed tensor memory inside the process on glibc, so CPU batches stop paying page faults.

glibc serves blocks above its mmap threshold (at most 32 MB by its dynamic rule) with a fresh
mmap and unmaps them on free, so every batch of activations (mobilenet_v2 at batch 32: 51 MB for
the first layer alone) comes back as zeroed pages. On a 2-core CPU (mobilenet_v2, batch
32, 4 batches, forward in a worker thread): 1.7 M minor page faults and 2.6-2.9 s of system time
before, 0.14 M and 0.2 s after. The settings: one malloc arena (worker threads share the main
heap instead of 64 MB side heaps, which fall back to mmap), mmap only above 1 GB, and no trimming
below 2 GB. Peak memory is unchanged; the process just keeps its peak instead of returning it.
PyTorch's CPU tuning guide gives the same advice (or jemalloc/tcmalloc). Set the environment
variable STPIPE_MALLOC_TUNING=0 to leave the allocator alone; `benchmarks/bench_backbones.py
--malloc` measures both ways.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
_done: bool | None = None


def reuse_freed_memory() -> bool:
    """Apply the glibc settings once per process; False where there is no glibc `mallopt`."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("STPIPE_MALLOC_TUNING") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(
        mallopt(option, value)
        for option, value in ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 2**31 - 1))
    )
    return _done
