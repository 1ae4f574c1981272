"""How many CPU threads this process should compute with: the CPUs it may really use.

`os.cpu_count()` (torch's default) counts the machine's cores, not the ones this process may use:
a CPU affinity mask (taskset, Slurm, Kubernetes cpusets), a cgroup CPU quota (docker --cpus,
Kubernetes limits), a Ray task's `num_cpus` (Ray sets OMP_NUM_THREADS to it in its workers), and an
explicit request (`--cpus-per-trial`) all cap it. More threads than CPUs makes OpenMP's spinning
threads wait on each other: train-head on a loaded 2-core machine ran at 280 samples/s with
torch's default threads and 2,691 with one. With nothing requested, CPUs other processes keep busy
right now are left to them: measured from /proc/stat over a fraction of a second on the CPUs this
process may use, less this process's own time. Not the load average: it trails by a minute and
counts this process's own earlier work (a demo's ablation after its extraction, or a benchmark's
second run, would take the cores it just used for somebody else's and run on one thread).
"""

from __future__ import annotations

import math
import os
import time


def usable_cpus() -> float:
    """CPUs this process may use: affinity mask, cgroup quota (v2 `cpu.max`, v1 cfs), cpu count."""
    count = float(os.cpu_count() or 1)
    try:
        count = min(count, float(len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        pass
    quota = _cgroup_quota()
    return max(1.0, min(count, quota)) if quota else count


def _cgroup_quota() -> float | None:
    for path in ("/sys/fs/cgroup/cpu.max",):
        try:
            quota, period = open(path).read().split()[:2]
            if quota != "max":
                return float(quota) / float(period)
        except (OSError, ValueError):
            pass
    try:
        quota = float(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period = float(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def compute_threads(requested: float | None = None, *, load_aware: bool = True) -> int:
    """Threads for torch's intra-op pool: `requested` (e.g. --cpus-per-trial), else a Ray task's
    allocation (OMP_NUM_THREADS), else the usable CPUs not kept busy by other processes; never more
    than the usable CPUs, never less than 1."""
    usable = usable_cpus()
    if requested is None:
        ray_cpus = os.environ.get("OMP_NUM_THREADS", "")
        if ray_cpus.isdigit() and int(ray_cpus) > 0:
            requested = float(ray_cpus)
    if requested is not None:
        return max(1, min(int(math.floor(requested)), int(usable)) or 1)
    free = usable
    if load_aware:
        busy = busy_elsewhere()
        free = usable - (busy if busy is not None else _load_average())
    return max(1, min(int(usable), int(math.floor(free + 0.5))))


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


WINDOW_S = 0.2  # long enough to see a busy loop as ~1 CPU, short enough to pay at every start
REUSE_S = 30.0  # an ablation asks before every trial: one measurement serves half a minute of them
_last: tuple[float, float] | None = None  # (monotonic time, busy CPUs) of the last measurement


def busy_elsewhere(window: float = WINDOW_S) -> float | None:
    """CPUs (of those this process may use) that other processes keep busy now; None without
    /proc/stat (then the caller falls back to the load average)."""
    global _last
    now = time.monotonic()
    if _last is not None and now - _last[0] < REUSE_S:
        return _last[1]
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = None
    before = _busy_ticks(cpus)
    if before is None:
        return None
    own_before = _own_seconds()
    time.sleep(window)
    after, own_after = _busy_ticks(cpus), _own_seconds()
    if after is None:
        return None
    elapsed = time.monotonic() - now
    tick = os.sysconf("SC_CLK_TCK")
    busy = max(0.0, (after - before) / tick / elapsed - (own_after - own_before) / elapsed)
    _last = (time.monotonic(), busy)
    return busy


def _busy_ticks(cpus: set[int] | None) -> int | None:
    """Non-idle ticks (user, nice, system, irq, softirq, steal) summed over `cpus` (None: all)."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in values[:8]]
        total += sum(ticks) - ticks[3] - ticks[4]  # less idle and iowait
    return total


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def apply_threads(requested: float | None = None) -> int:
    """Set torch's intra-op threads to `compute_threads(requested)`; returns the count."""
    import torch

    threads = compute_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
