"""TV-L1 flow: our batched PyTorch TV-L1 against OpenCV's DualTVL1, side by side, one run.

Measures
- accuracy: end-point error (EPE) on pairs made by warping real frames of ../shared/assets/videos
  with known flows (translation, rotation, zoom, random smooth: up to ~10 px; large: a 20-30 px pan
  with an object moving differently on top), ours, the presets and OpenCV on the same grey images,
  32 pairs per family (one pair decides 5% on 8: large motions are bistable, an object is found or
  lost); ours / OpenCV per family as the ratio of mean EPE with a bootstrap interval and as the
  median of per-pair ratios with quartiles;
- speed: pairs/s at 340x256 and 224x224 for batches of 1, 8 and 32 real consecutive-frame pairs,
  ours vs OpenCV at the same thread counts (medians of repeats, ours and OpenCV interleaved);
- compile cost (cold inductor cache and warm disk cache, fresh processes);
- bytes moved per primal-dual step and what the measured memory bandwidth would allow;
- peak memory for 32 pairs at 340x256 (RSS sampled in a fresh process; CUDA: max allocated).

Run: `.venv/bin/python benchmarks/bench_flow.py [--repeats 2] [--threads 2,1] [--quick] [--accuracy-only]
[--per-family 32] [--jobs N]`.
Prints markdown and writes it to benchmarks/results/bench_flow.md (not committed). The machine is
shared: the table records the load average, and numbers move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from shared_assets import default_assets  # noqa: E402

from pipeline.flow import PRESETS, build_flow, kernels  # noqa: E402
from pipeline.video import FrameSelection, read_frames  # noqa: E402

VIDEOS = ["Megamind_bugy.avi", "carphone_pristine.mp4", "tree.avi", "vtest.avi"]
SIZES = {"340x256": (256, 340), "224x224": (224, 224)}
FAMILIES = ("translation", "rotation", "zoom", "smooth", "large")
# Bytes each primal-dual step moves per pixel, counted in inductor's generated C++ for
# kernels.primal_dual_steps: rho loop (read I1wx, I1wy, rho_c, u; write rho) 24 B, primal loop
# (rho, I1wx, I1wy, u, p; write u) 44 B, stopping sum (new and old u) 16 B, dual loop (u, p; write p)
# 40 B. The floor for one fused pass (read u, p, data once; write u, p) is 60 B.
BYTES_COMPILED, BYTES_FLOOR = 124, 60
OPENCV_PYRAMID = "tvl1 scales=5 antialias=False (OpenCV's pyramid)"
OPENCV_DEFAULTS = "tvl1-opencv scales=5 (OpenCV's own defaults)"


# ---- inputs --------------------------------------------------------------------------------------


def grey(frames: np.ndarray) -> np.ndarray:
    return (frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)


def resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(img).float()[:, None]
    return F.interpolate(t, size=hw, mode="area")[:, 0].round().clamp(0, 255).byte().numpy()


def video_pairs(assets: Path, hw: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """n consecutive-frame pairs, spread over the four videos and over time."""
    prev, nxt = [], []
    per_video = -(-n // len(VIDEOS))
    for name in VIDEOS:
        frames = grey(read_frames(assets / "videos" / name, select=FrameSelection(max_frames=120)))
        starts = np.linspace(5, len(frames) - 2, per_video).astype(int)
        frames = resize(frames, hw)
        prev += [frames[s] for s in starts]
        nxt += [frames[s + 1] for s in starts]
    return np.stack(prev[:n]), np.stack(nxt[:n])


def known_flow(family: str, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(2, H, W) smooth flow with a largest displacement of about 10 px."""
    h, w = hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2 + rng.uniform(-20, 20), h / 2 + rng.uniform(-20, 20)
    reach = float(np.hypot(max(cx, w - cx), max(cy, h - cy)))
    if family == "translation":
        angle, mag = rng.uniform(0, 2 * np.pi), rng.uniform(1, 10)
        return np.stack([np.full((h, w), mag * np.cos(angle)), np.full((h, w), mag * np.sin(angle))]).astype(np.float32)
    if family == "rotation":
        a = rng.choice([-1, 1]) * rng.uniform(3, 10) / reach
        c, s = np.cos(a), np.sin(a)
        return np.stack([c * (xs - cx) - s * (ys - cy) + cx - xs, s * (xs - cx) + c * (ys - cy) + cy - ys])
    if family == "zoom":
        k = rng.choice([-1, 1]) * rng.uniform(3, 10) / reach
        return np.stack([k * (xs - cx), k * (ys - cy)])
    coarse = torch.from_numpy(rng.normal(size=(1, 2, 4, 5)).astype(np.float32))
    field = F.interpolate(coarse, size=hw, mode="bicubic", align_corners=True)[0].numpy()
    return field * (rng.uniform(4, 10) / np.sqrt((field**2).sum(0)).max())


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """img(x + flow(x)), bicubic, border replicated (float32 out)."""
    h, w = img.shape
    xs = torch.arange(w, dtype=torch.float32) + torch.from_numpy(flow[0])
    ys = torch.arange(h, dtype=torch.float32)[:, None] + torch.from_numpy(flow[1])
    grid = torch.stack([xs * 2 / (w - 1) - 1, ys * 2 / (h - 1) - 1], -1)[None]
    out = F.grid_sample(torch.from_numpy(img).float()[None, None], grid, mode="bicubic",
                        padding_mode="border", align_corners=True)
    return out[0, 0].numpy()


def large_motion(background: np.ndarray, texture: np.ndarray, rng: np.random.Generator):
    """A 20-30 px pan of a real frame plus an object (an ellipse of another real frame) moving 8-16 px
    relative to it. Returns I0, I1, flow I0 -> I1: background pixels of I0 are the pan of the bare
    background (so what the object covers in I1 is occluded, as in real footage), object pixels the
    object's own motion."""
    h, w = background.shape
    angle, mag = rng.uniform(0, 2 * np.pi), rng.uniform(20, 30)
    pan = np.array([mag * np.cos(angle), mag * np.sin(angle)], np.float32)
    angle, rel = rng.uniform(0, 2 * np.pi), rng.uniform(8, 16)
    obj = pan + np.array([rel * np.cos(angle), rel * np.sin(angle)], np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    rx, ry = rng.uniform(0.12, 0.2) * w, rng.uniform(0.15, 0.25) * h
    in1 = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1  # object in I1
    i1 = np.where(in1, texture, background).astype(np.float32)
    # object in I0: where x + obj lands on the object in I1
    in0 = ((xs + obj[0] - cx) / rx) ** 2 + ((ys + obj[1] - cy) / ry) ** 2 <= 1
    flow = np.where(in0[None], obj[:, None, None], pan[:, None, None]).astype(np.float32)
    i0 = np.where(in0, warp(i1, flow), warp(background.astype(np.float32), flow))
    as_u8 = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)  # noqa: E731
    return as_u8(i0), as_u8(i1), flow


def synthetic_pairs(assets: Path, hw: tuple[int, int], per_family: int, seed: int = 0):
    """{family: (I0, I1, flow)}: I1 a real frame, I0(x) = I1(x + u(x)), so u is the true flow I0 -> I1
    (for "large", see `large_motion`)."""
    rng = np.random.default_rng(seed)
    smooth = FAMILIES[:4]  # their frames and flows are what they were before "large" was added
    sources = video_pairs(assets, hw, per_family * len(smooth))[0]
    # "large": backgrounds from the first half of 2 * per_family other frames, object textures
    # from the second half (other videos)
    others = video_pairs(assets, hw, 2 * per_family)[1]
    out = {}
    for f, family in enumerate(FAMILIES):
        i0s, i1s, flows = [], [], []
        for k in range(per_family):
            if family == "large":
                i0, i1, flow = large_motion(others[k], others[per_family + k], rng)
            else:
                src = sources[f * per_family + k]
                flow = known_flow(family, hw, rng).astype(np.float32)
                i0, i1 = np.clip(np.round(warp(src, flow)), 0, 255).astype(np.uint8), src
            i0s.append(i0)
            i1s.append(i1)
            flows.append(flow)
        out[family] = (np.stack(i0s), np.stack(i1s), np.stack(flows))
    return out


def epe(est: torch.Tensor, truth: np.ndarray, margin: int = 4) -> float:
    """Mean EPE over pixels whose correspondence x + u(x) lies inside the image (minus a margin)."""
    t = torch.from_numpy(truth)
    h, w = t.shape[-2:]
    xs = torch.arange(w) + t[:, 0]
    ys = torch.arange(h)[:, None] + t[:, 1]
    valid = (xs >= margin) & (xs <= w - 1 - margin) & (ys >= margin) & (ys <= h - 1 - margin)
    err = (est.cpu() - t).norm(dim=1)
    return float(err[valid].mean())


# ---- timing ---------------------------------------------------------------------------------------


def set_threads(n: int) -> None:
    import cv2

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wall_and_cpu(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process (all its threads, OpenCV's pool included)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


class StepTimer:
    """Wraps kernels.primal_dual_compiled to time the primal-dual steps alone."""

    def __init__(self):
        self.inner, self.seconds = kernels.primal_dual_compiled, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out

    def __enter__(self):
        kernels.primal_dual_compiled = self
        return self

    def __exit__(self, *exc):
        kernels.primal_dual_compiled = self.inner


def bandwidth_gbs(threads: int) -> float:
    torch.set_num_threads(threads)
    a = torch.ones(64 * 2**20)  # 256 MB, far beyond the caches
    b = torch.empty_like(a)
    b.copy_(a)
    best = min(seconds(lambda: b.copy_(a)) for _ in range(5))
    return 2 * a.numel() * 4 / best / 1e9


# ---- probes run in fresh processes ----------------------------------------------------------------


def probe(mode: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--probe", mode], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_probe(mode: str, assets: Path) -> None:
    if mode.startswith("speed:"):  # speed:<threads>:<batches>:<pairs>:<repeats>, ours only, at 340x256
        _, t, batches, n, repeats = mode.split(":")
        batches = [int(b) for b in batches.split(",")]
        rows = speed_ours(assets, int(t), batches, int(n), int(repeats))
        print(json.dumps(rows))
        return
    torch.set_num_threads(1)  # compute in the probes stays small and steady; compile work is the same
    prev, nxt = video_pairs(assets, SIZES["340x256"], 32)
    method = build_flow("tvl1", device="cpu")
    if mode == "compile":
        # first calls compile every kernel variant (batch > 1 and 1, all pyramid sizes)
        first = seconds(lambda: method.pairs(prev[:2], nxt[:2])) + seconds(lambda: method.pairs(prev[:1], nxt[:1]))
        again = seconds(lambda: method.pairs(prev[:2], nxt[:2])) + seconds(lambda: method.pairs(prev[:1], nxt[:1]))
        print(json.dumps({"first": first, "again": again, "compile": first - again}))
        return
    method.pairs(prev[:2], nxt[:2])  # compile outside the measured window
    method.pairs(prev[:1], nxt[:1])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    method.pairs(prev, nxt)
    done.set()
    sampler.join()
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    print(json.dumps({"rss_before": base, "rss_peak": peak[0], "cuda_peak": cuda}))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- the benchmark ---------------------------------------------------------------------------------


# Accuracy rows: label -> (registry name, TVL1Params overrides). The first two are the headline.
ACCURACY_ROWS: dict[str, tuple[str, dict]] = {
    "tvl1": ("tvl1", {}),
    "tvl1-opencv": ("tvl1-opencv", {}),
    **{name: (name, {}) for name in PRESETS},
    "tvl1 border=zeros (as OpenCV)": ("tvl1", {"border": "zeros"}),
    "tvl1 antialias=False": ("tvl1", {"antialias": False}),
    # OpenCV's own pyramid: its default of 5 levels, no pre-smoothing (the defaults before issue 13)
    OPENCV_PYRAMID: ("tvl1", {"scales": 5, "antialias": False}),
    OPENCV_DEFAULTS: ("tvl1-opencv", {"scales": 5}),
}
_worker_data: dict = {}


def _accuracy_init(assets: str, per_family: int, seed: int) -> None:
    set_threads(1)  # one thread per process: EPE does not depend on it, and the processes share the cores
    _worker_data.update(synthetic_pairs(Path(assets), SIZES["340x256"], per_family, seed))
    i0, i1, _ = _worker_data[FAMILIES[0]]
    warm = build_flow("tvl1", device="cpu")  # load the compiled kernels outside the measured CPU time
    warm.pairs(i0[:2], i1[:2])
    warm.pairs(i0[:1], i1[:1])


def _accuracy_task(label: str, family: str) -> tuple[str, str, list[float], float]:
    name, overrides = ACCURACY_ROWS[label]
    i0, i1, truth = _worker_data[family]
    start = time.process_time()
    est = build_flow(name, device="cpu", **overrides).pairs(i0, i1)
    cpu = time.process_time() - start
    return label, family, [epe(est[k : k + 1], truth[k : k + 1]) for k in range(len(i0))], cpu


def accuracy(assets: Path, per_family: int, jobs: int = 1, seed: int = 0) -> tuple[dict, dict]:
    """Per-pair EPE {row: {family: [EPE of each pair]}} and CPU seconds per row, every row on the same
    pairs; (row, family) tasks spread over `jobs` processes of one thread each."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    tasks = [(label, family) for label in ACCURACY_ROWS for family in FAMILIES]
    tasks.sort(key=lambda t: ACCURACY_ROWS[t[0]][0] != "tvl1-opencv")  # the slow OpenCV rows first
    table, cpu = {label: {} for label in ACCURACY_ROWS}, dict.fromkeys(ACCURACY_ROWS, 0.0)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_accuracy_init,
                             initargs=(str(assets), per_family, seed)) as pool:
        for label, family, errors, seconds_ in pool.map(_accuracy_task, *zip(*tasks)):
            table[label][family] = errors
            cpu[label] += seconds_
    return table, cpu


def compare(ours: list[float], ref: list[float], resamples: int = 2000) -> dict[str, float]:
    """Ours vs a reference on the same pairs: ratio of mean EPEs with a 90% bootstrap interval (pairs
    resampled), median and quartiles of the per-pair ratios, and the pairs either one wins by > 10%."""
    a, b = np.asarray(ours), np.asarray(ref)
    picks = np.random.default_rng(0).integers(0, len(a), (resamples, len(a)))
    boot = a[picks].mean(1) / b[picks].mean(1)
    per_pair = a / b
    return {"ratio": a.mean() / b.mean(), "lo": np.percentile(boot, 5), "hi": np.percentile(boot, 95),
            "median": np.median(per_pair), "q1": np.percentile(per_pair, 25), "q3": np.percentile(per_pair, 75),
            "worse": int((per_pair > 1.1).sum()), "better": int((per_pair < 1 / 1.1).sum()), "pairs": len(a)}


def accuracy_lines(per_pair: dict, cpu: dict, per_family: int) -> tuple[list[str], dict]:
    """The EPE table and the per-family comparisons; also the mean EPE {row: {family: px}}."""
    means = {label: {f: statistics.mean(e) for f, e in row.items()} for label, row in per_pair.items()}
    ref_mean = statistics.mean(means["tvl1-opencv"].values())
    lines = ["", f"### Accuracy: mean EPE (px) on synthetic warps of real frames, 340x256, {per_family} pairs per family",
             "", "| method | " + " | ".join(FAMILIES) + " | mean | vs OpenCV | CPU-s |", "|---" * (len(FAMILIES) + 4) + "|"]
    for label, row in means.items():
        mean = statistics.mean(row.values())
        lines.append(f"| {label} | " + " | ".join(f"{row[f]:.3f}" for f in FAMILIES)
                     + f" | {mean:.3f} | {mean / ref_mean:.2f}x | {cpu[label]:.0f} |")
    for ours, ref in [("tvl1", "tvl1-opencv"), ("tvl1", OPENCV_DEFAULTS), (OPENCV_PYRAMID, OPENCV_DEFAULTS)]:
        lines += ["", f"{ours} / {ref}, per family (target <= 1.05):", "",
                  "| family | ratio of mean EPE | 90% interval | median per-pair ratio | quartiles | pairs >10% worse / better |",
                  "|---|---:|---:|---:|---:|---:|"]
        for f in FAMILIES:
            c = compare(per_pair[ours][f], per_pair[ref][f])
            lines.append(f"| {f} | **{c['ratio']:.3f}** | {c['lo']:.3f}-{c['hi']:.3f} | **{c['median']:.3f}** | "
                         f"{c['q1']:.3f}-{c['q3']:.3f} | {c['worse']} / {c['better']} of {c['pairs']} |")
    return lines, means


def speed(assets: Path, threads: list[int], batches: list[int], n_pairs: int, repeats: int) -> list[dict]:
    ours, ref = build_flow("tvl1", device="cpu"), build_flow("tvl1-opencv", device="cpu")
    rows = []
    for size, hw in SIZES.items():
        prev, nxt = video_pairs(assets, hw, n_pairs)
        for t in threads:
            set_threads(t)
            for b in batches:  # warm up: compile every variant for these thread counts and sizes
                ours.max_batch = b
                ours.pairs(prev[:b], nxt[:b])
            cv_times, our_times = [], {b: [] for b in batches}
            step_time, step_pixels = 0.0, 0
            for _ in range(repeats):
                cv_times.append(wall_and_cpu(lambda a=prev, b=nxt: ref.pairs(a, b)))
                for b in batches:
                    ours.max_batch = b
                    before = ours.pixel_iterations
                    with StepTimer() as timer:
                        our_times[b].append(wall_and_cpu(lambda a=prev, c=nxt: ours.pairs(a, c)))
                    if b == max(batches):
                        step_time += timer.seconds
                        step_pixels += ours.pixel_iterations - before
            cv_rate = n_pairs / statistics.median(w for w, _ in cv_times)
            cv_cpu = n_pairs / statistics.median(c for _, c in cv_times)
            for b in batches:
                rate = n_pairs / statistics.median(w for w, _ in our_times[b])
                cpu = n_pairs / statistics.median(c for _, c in our_times[b])
                rows.append({"size": size, "threads": t, "batch": b, "ours": rate, "opencv": cv_rate,
                             "ratio": rate / cv_rate, "ours_cpu": cpu, "opencv_cpu": cv_cpu, "ratio_cpu": cpu / cv_cpu,
                             "ns_per_pixel_step": step_time / step_pixels * 1e9,
                             "pixel_steps_per_pair": step_pixels / repeats / n_pairs})
    return rows


def speed_ours(assets: Path, threads: int, batches: list[int], n_pairs: int, repeats: int) -> dict[int, float]:
    torch.set_num_threads(threads)
    prev, nxt = video_pairs(assets, SIZES["340x256"], n_pairs)
    ours, rates = build_flow("tvl1", device="cpu"), {}
    for b in batches:
        ours.max_batch = b
        ours.pairs(prev[:b], nxt[:b])
        rates[b] = n_pairs / statistics.median(seconds(lambda: ours.pairs(prev, nxt)) for _ in range(repeats))
    return rates


def preset_speed(assets: Path, threads: int, n_pairs: int, repeats: int) -> dict[str, float]:
    set_threads(threads)
    prev, nxt = video_pairs(assets, SIZES["340x256"], n_pairs)
    methods = {name: build_flow(name, device="cpu", max_batch=8) for name in ["tvl1", *PRESETS]}
    methods[OPENCV_PYRAMID] = build_flow("tvl1", device="cpu", max_batch=8, scales=5, antialias=False)
    times = {name: [] for name in methods}
    for method in methods.values():
        method.pairs(prev[:8], nxt[:8])
    for _ in range(repeats):  # interleaved, so load changes hit every method alike
        for name, method in methods.items():
            times[name].append(seconds(lambda m=method: m.pairs(prev, nxt)))
    return {name: n_pairs / statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", default=str(default_assets()), help="$STPIPE_ASSETS, else ../shared/assets")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", default=f"{torch.get_num_threads()},1")
    ap.add_argument("--quick", action="store_true", help="fewer pairs, batches 1 and 8 only (a smoke run)")
    ap.add_argument("--no-passive", action="store_true",
                    help="skip the extra run of ours with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep at barriers)")
    ap.add_argument("--accuracy-only", action="store_true", help="the EPE table only (no speed, compile, memory)")
    ap.add_argument("--per-family", type=int, help="pairs per accuracy family (default 32, --quick 4)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes for the accuracy part (one thread each)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    assets = Path(args.assets)
    if args.probe:
        run_probe(args.probe, assets)
        return
    threads = [int(t) for t in args.threads.split(",")]
    batches, n_pairs, per_family = ([1, 8], 8, 4) if args.quick else ([1, 8, 32], 32, 32)
    per_family = args.per_family or per_family
    load = os.getloadavg()
    lines = [f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, load average {load[0]:.1f} at start"]

    start = time.perf_counter()
    per_pair, cpu = accuracy(assets, per_family, args.jobs)
    acc_lines, epes = accuracy_lines(per_pair, cpu, per_family)
    lines += acc_lines + ["", f"accuracy part: {time.perf_counter() - start:.0f} s wall, {sum(cpu.values()):.0f} CPU-s "
                          f"in {args.jobs} process(es) of one thread; load average {os.getloadavg()[0]:.1f} at its end"]
    ref_mean = statistics.mean(epes["tvl1-opencv"].values())
    if args.accuracy_only:
        write_results(lines)
        return

    rows = speed(assets, threads, batches, n_pairs, args.repeats)
    lines += ["", f"### Speed: pairs/s on {n_pairs} real consecutive-frame pairs (median of {args.repeats}), "
              "ours and OpenCV interleaved", "",
              "| size | threads | batch | ours pairs/s | OpenCV pairs/s | ratio | ours pairs/CPU-s | OpenCV pairs/CPU-s "
              "| ratio | ns per pixel-step | pixel-steps per pair |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['threads']} | {r['batch']} | {r['ours']:.2f} | {r['opencv']:.2f} | "
                     f"**{r['ratio']:.1f}x** | {r['ours_cpu']:.2f} | {r['opencv_cpu']:.2f} | {r['ratio_cpu']:.1f}x | "
                     f"{r['ns_per_pixel_step']:.2f} | {r['pixel_steps_per_pair'] / 1e6:.1f} M |")

    multi = [t for t in threads if t > 1]
    if multi and not args.no_passive:
        lines += ["", f"Ours again in a fresh process with OMP_WAIT_POLICY=PASSIVE (340x256, {multi[0]} threads; "
                  "OpenCV's pthreads pool does not read it):", "",
                  "| batch | ours pairs/s | OpenCV pairs/s (above) | ratio |", "|---|---|---|---|"]
        passive = probe(f"speed:{multi[0]}:{','.join(map(str, batches))}:{n_pairs}:{args.repeats}",
                        {"OMP_WAIT_POLICY": "PASSIVE"})
        cv_rate = next(r["opencv"] for r in rows if r["size"] == "340x256" and r["threads"] == multi[0])
        for b, rate in passive.items():
            lines.append(f"| {b} | {rate:.2f} | {cv_rate:.2f} | **{rate / cv_rate:.1f}x** |")

    bw = {t: bandwidth_gbs(t) for t in threads}
    lines += ["", "### Memory traffic of the primal-dual step", "",
              f"bytes per pixel-step: {BYTES_COMPILED} as compiled (4 loops), {BYTES_FLOOR} for one fused pass.", ""]
    for t in threads:
        best = min((r for r in rows if r["threads"] == t and r["size"] == "340x256"), key=lambda r: r["ns_per_pixel_step"])
        achieved = BYTES_COMPILED / best["ns_per_pixel_step"]
        lines.append(f"- {t} thread(s): copy bandwidth {bw[t]:.1f} GB/s; steps at batch {best['batch']} move "
                     f"{achieved:.1f} GB/s ({best['ns_per_pixel_step']:.2f} ns per pixel-step); bandwidth alone would "
                     f"allow {BYTES_COMPILED / bw[t]:.2f} ns ({BYTES_FLOOR / bw[t]:.2f} ns fused), i.e. "
                     f"{bw[t] * 1e9 / BYTES_COMPILED / best['pixel_steps_per_pair']:.1f} pairs/s of steps at 340x256")

    compile_cold = probe("compile", {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="stpipe-inductor-")})
    compile_warm = probe("compile")
    memory = probe("memory")
    lines += ["", "### One-off compile cost (fresh process, 2 + 1 pairs at 340x256, first calls minus repeat calls)", "",
              f"- cold inductor cache: {compile_cold['compile']:.1f} s", f"- warm disk cache: {compile_warm['compile']:.1f} s",
              "", "### Peak memory, 32 pairs at 340x256 in one batch", "",
              f"- RSS growth during the call: {(memory['rss_peak'] - memory['rss_before']) / 2**20:.0f} MiB "
              f"(process RSS {memory['rss_peak'] / 2**20:.0f} MiB incl. torch and compiled code)"]
    if memory["cuda_peak"]:
        lines.append(f"- CUDA max allocated: {memory['cuda_peak'] / 2**20:.0f} MiB")

    few = min(threads)
    rates = preset_speed(assets, few, 16 if not args.quick else 8, args.repeats)
    cv_rate = next(r["opencv"] for r in rows if r["size"] == "340x256" and r["threads"] == few)
    lines += ["", f"### Presets: cost and error (340x256, batch 8, {few} thread(s), 16 real pairs)", "",
              "| method | overrides | pairs/s | vs tvl1 | vs OpenCV | mean EPE | EPE vs OpenCV |", "|---|---|---|---|---|---|---|"]
    for name, rate in rates.items():
        mean = statistics.mean(epes[name].values())
        over = ", ".join(f"{k}={v}" for k, v in PRESETS.get(name, {}).items()) or (
            "scales=5, antialias=False" if name == OPENCV_PYRAMID else "defaults")
        lines.append(f"| {name} | {over} | {rate:.2f} | {rate / rates['tvl1']:.2f}x | {rate / cv_rate:.1f}x | "
                     f"{mean:.3f} | {mean / ref_mean:.2f}x |")
    write_results(lines)


def write_results(lines: list[str]) -> None:
    lines = [*lines, "", f"load average {os.getloadavg()[0]:.1f} at the end (2 cores shared with other jobs: expect noise)"]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_flow.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
