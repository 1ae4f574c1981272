"""How much memory a run may still take, and what a piece of work actually peaks at.

Batch sizes that are fine on one machine get a process killed by the kernel on another (the OOM
killer ends it with no message). So work whose memory grows with its batch measures one small
piece of it (`Peak`) and sizes the batch from `available()`, instead of trusting a default.

CPU: what the kernel would still give this process is the smaller of MemAvailable (/proc/meminfo)
and the headroom under this process's cgroup limit (a container's `--memory`, a Slurm job's
allocation; cgroup v2 or v1). The peak of a piece of work is the growth of the resident set's
high-water mark (VmHWM, reset through /proc/self/clear_refs) while it runs; where that cannot be
reset, a thread samples the resident set.
CUDA: free device memory plus what torch's caching allocator holds unused; the peak is
torch.cuda.max_memory_allocated's growth.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

GB = 1e9


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # where the number comes from, for messages: "MemAvailable", "cgroup limit", "free CUDA memory"

    def describe(self) -> str:
        return f"{self.bytes / GB:.1f} GB ({self.source})"


def available(device: torch.device | str = "cpu") -> Available:
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return Available(int(free + cached), "free CUDA memory")
    found = [Available(v, "MemAvailable") for v in (_meminfo_available(),) if v is not None]
    found += [Available(v, "cgroup limit") for v in (_cgroup_headroom(),) if v is not None]
    if not found:  # not Linux: what torch itself can see is nothing; assume the machine's physical memory
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        return Available(int(pages * os.sysconf("SC_PAGE_SIZE")) // 2 if pages else 8 * 10**9, "half the RAM")
    return min(found, key=lambda a: a.bytes)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_headroom() -> int | None:
    """The least limit - usage over this process's memory cgroup and its ancestors (v2 or v1), or
    None when none of them has a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    headroom = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mount, limit_name, usage_name = Path("/sys/fs/cgroup"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            mount, limit_name, usage_name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = mount / path.lstrip("/")
        for level in (folder, *folder.parents):  # inside a container the own cgroup may be the mount itself
            if not level.is_relative_to(mount):
                break
            try:
                limit = (level / limit_name).read_text().strip()
                usage = int((level / usage_name).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit.isdigit() and int(limit) < 1 << 60:
                headroom.append(max(int(limit) - usage, 0))
    return min(headroom) if headroom else None


# ---- the peak of a piece of work ------------------------------------------------------------------


def release_free_memory() -> None:
    """Hand memory the allocator keeps after frees back to the kernel (glibc malloc_trim), so the
    next measurement starts from what is really in use."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Peak:
    """`with Peak(device) as peak: work()`, then `peak.bytes`: how far memory rose above its level
    at the start while the work ran."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.bytes = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        release_free_memory()
        self._start = _rss()
        if not _reset_hwm() or _hwm() is None:
            self._sampled = self._start
            self._sampler = threading.Thread(target=self._sample, daemon=True, name="stpipe-peak-rss")
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = max(torch.cuda.max_memory_allocated(self.device) - self._start, 0)
            return
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            top = max(self._sampled, _rss())
        else:
            top = _hwm() or _rss()
        self.bytes = max(top - self._start, 0)
