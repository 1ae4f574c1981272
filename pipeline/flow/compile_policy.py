"""Compile TV-L1's kernels or run them eager: whichever finishes a job sooner.

`torch.compile` costs minutes the first time on a machine (inductor then keeps the kernels in its
disk cache, and a later process loads them in seconds); the compiled kernels save a fixed amount
of time per pixel of every pair. So a job compiles only when its pairs save more than the compile
costs: `choose` makes that call from the job's size, with the costs measured on a CPU by
benchmarks/bench_flow_compile.py (benchmarks/README.md). The numbers are for CPUs only; on other
devices the kernels are always compiled (no eager break-even measured there).

STPIPE_FLOW_COMPILE=1 always compiles, =0 never does (kernels.Compiled also honours 0 everywhere),
unset or `auto` decides by size. A warm-up (`warm_up`) compiles once per node before the workers
start and leaves a marker next to inductor's cache, so later jobs know the compile is cheap there.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "STPIPE_FLOW_COMPILE"
STREAM_THREADS = 1  # torch threads of a flow stream: extract's decode threads run TV-L1 on one each


@dataclass(frozen=True)
class CompileCosts:
    """What compiling costs and saves on one kind of device (seconds; one flow stream per core)."""

    cold_seconds: float  # first compile on a machine (empty inductor cache), per node, in parallel
    warm_seconds: float  # loading the compiled kernels from inductor's disk cache, per process
    saved_ns_per_pixel: float  # eager minus compiled time per pixel of one pair, one thread


# A 2-core CPU's costs (benchmarks/README.md, "TV-L1: compile or eager"): a cold compile of 83-126 s
# (several times that under load), a warm load of 10 s;
# the saving is the smaller of tvl1-fast at 64 px (the demo's flow) and tvl1 at 256 px.
CPU_COSTS = CompileCosts(cold_seconds=100.0, warm_seconds=10.0, saved_ns_per_pixel=4000.0)


@dataclass(frozen=True)
class CompileChoice:
    compile: bool
    reason: str

    @property
    def mode(self) -> str:
        return "compiled" if self.compile else "eager"

    def describe(self) -> str:
        return f"TV-L1 {self.mode}: {self.reason}"


def break_even_pairs(pixels: int, *, streams: int = 1, warm: bool = False, costs: CompileCosts = CPU_COSTS) -> int:
    """Pairs of `pixels` each above which compiling finishes sooner.

    The compile holds up all `streams` flow streams of a node (they wait for the warm-up), while
    the saving is spread over them: it pays off once pairs * saving / streams > compile seconds.
    """
    compile_seconds = costs.warm_seconds if warm else costs.cold_seconds
    saved = costs.saved_ns_per_pixel * 1e-9 * max(1, pixels)
    return int(compile_seconds * max(1, streams) / saved) + 1


def choose(pairs: int, pixels: int, *, device_type: str = "cpu", streams: int = 1, warm: bool = False,
           env: dict[str, str] | None = None, costs: CompileCosts = CPU_COSTS) -> CompileChoice:
    """Compile or eager for a job of about `pairs` flow pairs of `pixels` pixels each."""
    setting = (os.environ if env is None else env).get(ENV, "auto").strip().lower() or "auto"
    if setting in ("0", "1"):
        return CompileChoice(setting == "1", f"{ENV}={setting}")
    if setting != "auto":
        from pipeline.errors import ConfigError

        raise ConfigError(f"{ENV}={setting!r}: expected 0 (eager), 1 (compile) or auto")
    if device_type != "cpu":
        return CompileChoice(True, f"always compiled on {device_type} (Triton kernels on CUDA: seconds)")
    threshold = break_even_pairs(pixels, streams=streams, warm=warm, costs=costs)
    cache = "warm inductor cache" if warm else "cold inductor cache"
    seconds = costs.warm_seconds if warm else costs.cold_seconds
    size = f"~{pairs:,} pairs of {pixels:,} px"
    if pairs >= threshold:
        return CompileChoice(True, f"{size} >= {threshold:,}, where compiling (~{seconds:.0f} s, {cache}) "
                                   f"pays off ({ENV}=0 runs eager)")
    return CompileChoice(False, f"{size} < {threshold:,}, where compiling (~{seconds:.0f} s, {cache}) "
                                f"would pay off ({ENV}=1 compiles anyway)")


# ---- warm-up and its marker ------------------------------------------------------------------------


def cache_marker(device_type: str, check_every: int, border: str, threads: int = STREAM_THREADS) -> Path:
    """A file next to inductor's disk cache saying this kernel source was compiled there.

    Keyed by torch's version, the kernels' source and what specialises the graphs (device,
    steps per call, border mode, and torch's thread count: inductor bakes it into CPU kernels and
    its cache key): any change means a cold compile again. It lives in inductor's cache folder, so
    clearing that cache clears the marker too.
    """
    import torch
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from pipeline.flow import kernels

    key = hashlib.sha256(Path(kernels.__file__).read_bytes())
    key.update(f"{torch.__version__}|{device_type}|{check_every}|{border}|{threads}".encode())
    return Path(cache_dir()) / "stpipe" / f"tvl1-{key.hexdigest()[:16]}.warm"


def cache_is_warm(method) -> bool:
    return cache_marker(method.device.type, method.check_every, method.config.border).is_file()


def warm_up(method, threads: int = STREAM_THREADS) -> float:
    """Compile `method`'s kernels in this process (every graph the runs use: a batch of several
    pairs and one of a single pair) for `threads` torch threads, mark inductor's cache warm;
    returns the seconds it took."""
    import torch

    if not method.compile:
        raise ValueError("warm_up needs a method built with compile=True")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the kernels run with the flow streams' thread count
    try:
        return _warm_up(method, threads)
    finally:
        torch.set_num_threads(previous)


def _warm_up(method, threads: int) -> float:
    import torch

    from pipeline.flow import kernels

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    # 64x80: the pyramid's levels fall on both sides of 2 * H * W = 4096, where inductor
    # compiles the primal-dual step's per-pair reduction in two ways (a size guard)
    frames = torch.randint(0, 256, (4, 64, 80), generator=generator, dtype=torch.uint8)
    method.pairs(frames[:3], frames[1:])  # several pairs: the batch dimension stays dynamic
    method.pairs(frames[:1], frames[1:2])  # one pair: torch specialises a batch of 1
    if any(k.failed for k in (kernels.primal_dual_compiled, kernels.median_padded_compiled, kernels.warp_compiled)):
        return time.perf_counter() - started  # fell back to eager (warned): nothing cached
    marker = cache_marker(method.device.type, method.check_every, method.config.border, threads)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{torch.__version__}\n")
    return time.perf_counter() - started
