"""TV-L1: compile or eager — the costs behind pipeline/flow/compile_policy.py, one run.

Measures, each in fresh processes with one torch thread (one flow stream per core, as extract runs):
- the cold compile (empty TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR made for this run) by
  `compile_policy.warm_up`, how many graphs it compiled, and whether a real run after it compiled
  anything more (it must not: the workers only load what the warm-up compiled);
- the warm compile (a new process, same cache dirs: what each worker pays after the warm-up);
- eager vs compiled time per pair on demo-like pairs (the demo's glyphs moving, resized) for
  tvl1-fast at 64 px (the demo's flow) and tvl1 at 256 px, interleaved, medians of repeats;
- the break-even number of pairs these imply, beside the one `compile_policy.CPU_COSTS` uses.

Run: `.venv/bin/python benchmarks/bench_flow_compile.py [--repeats 3]`. The machine is shared:
the output records the load average; compare the ratios, not the seconds, across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = (("tvl1-fast", 64, 64), ("tvl1", 256, 16))  # method, flow short side, pairs timed


def demo_pairs(n: int, short: int):
    """n consecutive-frame pairs of demo clips (glyphs moving as the demo's classes), grey-free uint8."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from pipeline.demo_data import _shapes, render_clip

    rng, glyphs, prev, nxt, k = np.random.default_rng(0), _shapes(), [], [], 0
    while len(prev) < n:
        clip = torch.from_numpy(render_clip(k % 10, glyphs[k % len(glyphs)], rng, 10, max(112, short)))
        small = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=(short, short), mode="area")
        small = small.round().byte().permute(0, 2, 3, 1).numpy()
        prev += list(small[:-1])
        nxt += list(small[1:])
        k += 1
    return np.stack(prev[:n]), np.stack(nxt[:n])


def probe(mode: str, repeats: int) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from pipeline.flow import build_flow
    from pipeline.flow.compile_policy import warm_up

    torch.set_num_threads(1)
    if mode in ("cold", "warm"):
        method = build_flow("tvl1-fast", device="cpu", max_batch=16)
        seconds = warm_up(method)
        graphs = counters["stats"].get("unique_graphs", 0)
        prev, nxt = demo_pairs(40, 64)
        method.pairs(prev[:33], nxt[:33])  # a real batch, other sizes than the warm-up's
        method.pairs(prev[33:], nxt[33:])
        return {"seconds": seconds, "graphs": graphs, "graphs_after_run": counters["stats"].get("unique_graphs", 0)}
    out = {}
    for name, short, n in CASES:
        prev, nxt = demo_pairs(n, short)
        methods = {c: build_flow(name, device="cpu", max_batch=16, compile=c) for c in (False, True)}
        for m in methods.values():
            m.pairs(prev[:16], nxt[:16])
            m.pairs(prev[:1], nxt[:1])
        times = {False: [], True: []}
        for _ in range(repeats):
            for c, m in methods.items():
                start = time.perf_counter()
                m.pairs(prev, nxt)
                times[c].append((time.perf_counter() - start) / n)
        eager, compiled = statistics.median(times[False]), statistics.median(times[True])
        out[f"{name}@{short}"] = {"eager_ms": 1e3 * eager, "compiled_ms": 1e3 * compiled, "pixels": short * short,
                                  "saved_ns_per_px": 1e9 * (eager - compiled) / (short * short)}
    return out


def run_probe(mode: str, repeats: int, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--probe", mode, "--repeats", str(repeats)], capture_output=True,
                         text=True, env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.repeats)))
        return
    from pipeline.flow.compile_policy import CPU_COSTS, break_even_pairs

    cache = tempfile.mkdtemp(prefix="stpipe-bench-compile-")
    env = {"TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor", "TRITON_CACHE_DIR": f"{cache}/triton",
           "STPIPE_FLOW_COMPILE": "auto"}
    load = os.getloadavg()[0]
    cold = run_probe("cold", args.repeats, env)
    warm = run_probe("warm", args.repeats, env)
    speed = run_probe("speed", args.repeats, env)
    print(f"# TV-L1 compile or eager (load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)\n")
    print(f"- cold compile (warm_up, empty caches): {cold['seconds']:.1f} s, {cold['graphs']} graphs; "
          f"a real run after it compiled {cold['graphs_after_run'] - cold['graphs']} more")
    print(f"- warm compile (new process, same caches): {warm['seconds']:.1f} s\n")
    print("| pairs | eager ms/pair | compiled ms/pair | eager/compiled | saved ns/px | break-even pairs, "
          "2 streams, cold / warm (measured) | policy's (CPU_COSTS) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case, r in speed.items():
        saved_s = r["saved_ns_per_px"] * 1e-9 * r["pixels"]
        measured = [int(s * 2 / saved_s) + 1 if saved_s > 0 else 0 for s in (cold["seconds"], warm["seconds"])]
        policy = [break_even_pairs(r["pixels"], streams=2, warm=w) for w in (False, True)]
        print(f"| {case} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | {r['eager_ms'] / r['compiled_ms']:.2f}x | "
              f"{r['saved_ns_per_px']:.0f} | {measured[0]:,} / {measured[1]:,} | {policy[0]:,} / {policy[1]:,} |")
    print(f"\nCPU_COSTS: {CPU_COSTS}")


if __name__ == "__main__":
    main()
