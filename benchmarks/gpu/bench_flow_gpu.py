"""TV-L1 on the GPU against OpenCV's DualTVL1 on every CPU core of the same host, one run.

Measures (340x256 real consecutive-frame pairs, OpenCV's default parameters):
- our pairs/s on CUDA at batch 32 and 128, for the Triton solver with CUDA graphs (the default),
  without graphs, and (`--torch-engine`) the generic torch.compile solver this replaced;
- the first call of each (Triton JIT / inductor compile) and peak GPU memory;
- OpenCV DualTVL1 pairs/s with one single-threaded process per core (`--opencv-procs`, default all);
- the effective memory traffic of our step (84 bytes per pixel-step) against the card's copy rate;
- `--accuracy`: EPE against known flow on the synthetic families of bench_flow.py, CUDA vs the CPU
  solver on the same pairs, and the EPE between the two (needs PyAV and the clips).

Inputs: `--inputs pairs.npz` (made here with `--prepare pairs.npz`, so the GPU host needs no
decoder) or the clips under STPIPE_ASSETS. Writes DIR/flow_gpu.json with `--out DIR`.
`--dry-run`: tiny sizes on the CPU (generic solver), to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipeline.flow import build_flow  # noqa: E402

BYTES_PER_PIXEL_STEP = 84  # Triton solver: primal (read u, p x4 + 2 neighbours, data x3; write u) + dual


def assets_dir() -> Path:
    return Path(os.environ.get("STPIPE_ASSETS", ROOT.parent / "shared" / "assets"))


def load_pairs(args) -> tuple[np.ndarray, np.ndarray]:
    if args.inputs:
        with np.load(args.inputs) as z:
            return z["prev"], z["next"]
    from bench_flow import SIZES, video_pairs

    return video_pairs(assets_dir(), SIZES["340x256"], args.distinct)


def tile(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x] * (-(-n // len(x))))[:n]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(method, prev: torch.Tensor, nxt: torch.Tensor, batch: int, repeats: int) -> dict:
    """pairs/s over all pairs in batches of `batch` (after one warm-up batch), median of repeats."""
    device = method.device
    for _ in range(2):  # the first call compiles, the second captures this shape's CUDA graphs
        method.pairs(prev[:batch], nxt[:batch])
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rates, steps = [], []
    for _ in range(repeats):
        before = method.pixel_iterations
        t0 = time.perf_counter()
        for s in range(0, len(prev) - batch + 1, batch):
            method.pairs(prev[s:s + batch], nxt[s:s + batch])
        sync(device)
        wall = time.perf_counter() - t0
        done = (len(prev) // batch) * batch
        rates.append(done / wall)
        steps.append((method.pixel_iterations - before) / wall)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    rate = statistics.median(rates)
    return {"batch": batch, "pairs_per_s": rate, "repeats": rates, "pixel_steps_per_s": statistics.median(steps),
            "effective_gbs": statistics.median(steps) * BYTES_PER_PIXEL_STEP / 1e9, "peak_mib": peak}


def first_call(build, prev, nxt, batch: int) -> float:
    method = build()
    t0 = time.perf_counter()
    method.pairs(prev[:batch], nxt[:batch])
    sync(method.device)
    return time.perf_counter() - t0


def _opencv_worker(args) -> int:
    prev, nxt = args
    import cv2

    cv2.setNumThreads(1)
    method = build_flow("tvl1-opencv", device="cpu")
    method.pairs(prev, nxt)
    return len(prev)


def opencv_all_cores(prev: np.ndarray, nxt: np.ndarray, procs: int, per_proc: int) -> dict:
    chunks = [(tile(prev, per_proc * procs)[i::procs], tile(nxt, per_proc * procs)[i::procs]) for i in range(procs)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        pool.map(_opencv_worker, [(p[:1], n[:1]) for p, n in chunks])  # start-up and imports apart
        t0 = time.perf_counter()
        done = sum(pool.map(_opencv_worker, chunks))
        wall = time.perf_counter() - t0
    return {"procs": procs, "pairs": done, "pairs_per_s": done / wall, "seconds": wall}


def copy_bandwidth_gbs(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    x = torch.empty(2**28, device=device)  # 1 GiB
    y = torch.empty_like(x)
    y.copy_(x)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync(device)
    return 10 * 2 * x.numel() * 4 / (time.perf_counter() - t0) / 1e9


def accuracy(device: torch.device, per_family: int, dry: bool) -> dict:
    """Known-flow EPE on bench_flow.py's synthetic families: ours on `device` vs ours on the CPU."""
    from bench_flow import FAMILIES, SIZES, epe, synthetic_pairs

    hw = (64, 80) if dry else SIZES["340x256"]
    data = synthetic_pairs(assets_dir(), hw, per_family)
    torch.set_num_threads(os.cpu_count() or 1)
    cpu = build_flow("tvl1", device="cpu", engine="torch", compile=False)
    dev = build_flow("tvl1", device=device, compile=device.type == "cuda")
    out = {}
    for family in FAMILIES:
        i0, i1, truth = data[family]
        a = cpu.pairs(i0, i1)
        b = dev.pairs(i0, i1).cpu()
        out[family] = {"epe_cpu": epe(a, truth), "epe_device": epe(b, truth),
                       "epe_device_vs_cpu": float((a - b).norm(dim=1).mean()),
                       "max_abs_diff": float((a - b).abs().max())}
    return out


def prepare(path: Path, distinct: int) -> None:
    from bench_flow import SIZES, video_pairs

    prev, nxt = video_pairs(assets_dir(), SIZES["340x256"], distinct)
    np.savez_compressed(path, prev=prev, next=nxt)
    print(f"wrote {path}: {len(prev)} pairs {prev.shape[1:]} ({path.stat().st_size / 2**20:.1f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--inputs", type=Path, default=None, help="pairs .npz made with --prepare")
    ap.add_argument("--prepare", type=Path, default=None, help="write the input pairs to this .npz and stop")
    ap.add_argument("--distinct", type=int, default=32, help="distinct real pairs (tiled to --pairs)")
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batches", default="32,128")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--opencv-procs", type=int, default=os.cpu_count())
    ap.add_argument("--opencv-pairs-per-proc", type=int, default=3)
    ap.add_argument("--sections", default="speed,opencv", help="any of speed, opencv, accuracy")
    ap.add_argument("--no-graphs-row", action="store_true", help="skip the Triton-without-graphs row")
    ap.add_argument("--scales", default="0,5",
                    help="pyramid depths to time with Triton + graphs (0 = the full pyramid, the default; 5 = OpenCV's)")
    ap.add_argument("--torch-engine", action="store_true", help="also time the generic torch.compile solver")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    args = ap.parse_args()
    if args.prepare:
        return prepare(args.prepare, args.distinct)

    dry = args.dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not dry:
        sys.exit("bench_flow_gpu: no CUDA device here; use --dry-run to check the script on a CPU")
    prev_np, next_np = load_pairs(args)
    if dry:
        prev_np, next_np = prev_np[:4, :48, :64], next_np[:4, :48, :64]
        args.pairs, args.batches, args.repeats = 4, "2", 1
        args.opencv_procs, args.opencv_pairs_per_proc = min(2, args.opencv_procs), 1
    batches = [int(b) for b in args.batches.split(",")]
    sections = set(args.sections.split(","))
    prev = torch.from_numpy(tile(prev_np, args.pairs)).to(device)
    nxt = torch.from_numpy(tile(next_np, args.pairs)).to(device)
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)",
                    "torch": torch.__version__, "size": list(prev.shape[1:]), "pairs": args.pairs,
                    "distinct_pairs": len(prev_np), "copy_gbs": copy_bandwidth_gbs(device), "rows": []}
    engines = [(f"triton + CUDA graphs{'' if sc == 0 else f', {sc} levels'}", dict(engine="triton", cuda_graphs=True, scales=sc))
               for sc in (int(v) for v in args.scales.split(","))]
    if not args.no_graphs_row:
        engines.append(("triton, no graphs", dict(engine="triton", cuda_graphs=False)))
    if args.torch_engine or dry:
        engines.append(("torch.compile (generic)", dict(engine="torch")))
    if dry:  # the Triton solver needs CUDA (or the slow interpreter): the dry run times the generic one
        engines = [(name, {**kw, "engine": "torch", "compile": False}) for name, kw in engines]
    for name, kw in engines if "speed" in sections else []:
        first = first_call(lambda kw=kw: build_flow("tvl1", device=device, max_batch=max(batches), **kw), prev, nxt,
                           min(batches))
        for b in batches:
            method = build_flow("tvl1", device=device, max_batch=b, **kw)
            row = {"engine": name, "first_call_s": first, **time_ours(method, prev, nxt, b, args.repeats)}
            result["rows"].append(row)
            print(f"{name:26s} batch {b:4d}: {row['pairs_per_s']:8.1f} pairs/s  "
                  f"{row['effective_gbs']:7.1f} GB/s  peak {row['peak_mib'] or 0:7.0f} MiB  first call {first:.1f} s",
                  flush=True)
    if "opencv" in sections:
        try:
            result["opencv"] = opencv_all_cores(prev_np, next_np, args.opencv_procs, args.opencv_pairs_per_proc)
            ocv = result["opencv"]["pairs_per_s"]
            print(f"OpenCV DualTVL1, {args.opencv_procs} processes x 1 thread: {ocv:.1f} pairs/s", flush=True)
            for row in result["rows"]:
                row["vs_opencv_all_cores"] = row["pairs_per_s"] / ocv
        except Exception as exc:  # no opencv-contrib on this host
            result["opencv"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"OpenCV baseline skipped: {result['opencv']['error']}", flush=True)
    if "accuracy" in sections:
        result["accuracy"] = accuracy(device, 1 if dry else 4, dry)
        for fam, r in result["accuracy"].items():
            print(f"accuracy {fam:12s}: EPE cpu {r['epe_cpu']:.3f} device {r['epe_device']:.3f} "
                  f"device-vs-cpu {r['epe_device_vs_cpu']:.4f} px", flush=True)
    print_table(result)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "flow_gpu" if "speed" in sections else "flow_gpu_" + "_".join(sorted(sections))
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))


def print_table(result: dict) -> None:
    ocv = result.get("opencv", {}).get("pairs_per_s")
    print(f"\n{result['device']}, {result['size'][1]}x{result['size'][0]}, {result['pairs']} pairs "
          f"({result['distinct_pairs']} distinct); copy {result['copy_gbs'] or 0:.0f} GB/s")
    print("| solver | batch | pairs/s | vs OpenCV all cores | GB/s (84 B/pixel-step) | peak MiB | first call s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        vs = f"{r['pairs_per_s'] / ocv:.1f}x" if ocv else "-"
        print(f"| {r['engine']} | {r['batch']} | {r['pairs_per_s']:.1f} | {vs} | {r['effective_gbs']:.0f} | "
              f"{r['peak_mib'] or 0:.0f} | {r['first_call_s']:.1f} |")
    if ocv:
        print(f"| OpenCV DualTVL1, {result['opencv']['procs']} procs x 1 thread | 1 | {ocv:.1f} | 1.0x | | | |")


if __name__ == "__main__":
    main()
