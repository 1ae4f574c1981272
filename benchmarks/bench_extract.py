"""Stage one against its limits (issue 5), measured in one run and printed side by side.

Sections (`--sections`, default all four):

  speed  end-to-end extraction frames/s (decode + preprocess + backbone + write: the time of
         `Extractor.process`) vs the backbone's pure forward frames/s on pre-decoded tensors
         (`forward_limit` of bench_backbones.py, same batch size and threads), for mobilenet_v2
         pooled and spatial on the shared clips. The limit is measured before and after every
         end-to-end run and averaged, so a change in the machine's load hits both; the ratio is
         the median of the per-repeat ratios. Also printed: CPU ms per frame of both (the
         end-to-end one counts every thread: decoders, writer, Zarr's codec threads) and their
         ratio, which is what each costs on a shared machine; padded rows (compute spent on the
         zero rows of short batches).
  flow   `--flow` extraction (each `--flow-methods`) vs the naive per-video loop users write today,
         on the same frames (the first `--flow-frames` of each clip):
         decode all frames with PyAV, resize to the flow size, OpenCV TV-L1
         (cv2.optflow.DualTVL1OpticalFlow_create(), its defaults = ours) pair by pair, one backbone
         forward per video, one .npy per video for features and one for flow.
  bytes  bytes on disk per frame in the stores of the runs above: pooled and spatial features
         (float16, Blosc zstd) vs float32 .npy, and flow (uint8, Blosc zstd) vs float32 .npy and vs
         TSN-style JPEG pairs (one grey JPEG per component, quality 95, as denseflow writes them).
  rss    peak RSS of an `stpipe extract` subprocess (os.wait4) on a long synthetic video made with
         PyAV, next to a video a tenth as long (bounded memory: the two peaks about equal) and to
         the floor: a process that only builds the backbone and runs forwards of one batch.

Run: `TORCH_HOME=<a cache holding mobilenet_v2-b0353104.pth> .venv/bin/python benchmarks/bench_extract.py`
(ImageNet IMAGENET1K_V1 weights when that file is cached, else random init; the speed is the same).
Sizes are flags (see --help); the defaults finish in minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_backbones import forward_limit  # noqa: E402
from shared_assets import default_assets  # noqa: E402

from pipeline.backbones import build_backbone, cache_path  # noqa: E402
from pipeline.extraction import ExtractConfig, Extractor  # noqa: E402
from pipeline.extraction.models import load_models  # noqa: E402
from stages import extract  # noqa: E402

CLIPS = ("Megamind_bugy.avi", "carphone_pristine.mp4", "tree.avi", "vtest.avi")
BACKBONE = "mobilenet_v2"


# ---- inputs -----------------------------------------------------------------------------------


def pick_weights(requested: str) -> str:
    """IMAGENET1K_V1 when its file is in the torch cache (no network), else random init."""
    if requested != "auto":
        return requested
    from torchvision.models import MobileNet_V2_Weights

    return "IMAGENET1K_V1" if cache_path(MobileNet_V2_Weights.IMAGENET1K_V1).exists() else "none"


def write_manifest(path: Path, videos: list[Path]) -> Path:
    """A manifest of `videos` (repeats get distinct ids) and its class list."""
    lines = ["video_id,path,label,split"]
    lines += [f"v{i:04d}_{v.stem},{v},c{i % 2},train" for i, v in enumerate(videos)]
    path.write_text("\n".join(lines) + "\n")
    path.with_name(f"{path.stem}.classes.txt").write_text("c0\nc1\n")
    return path


def config(manifest: Path, output: Path, **kw) -> ExtractConfig:
    base = dict(manifest=str(manifest), output=str(output), backbone=BACKBONE, executor="local", overwrite=True)
    return ExtractConfig(**{**base, **kw})


def timed_extract(cfg: ExtractConfig, models=None):
    """`stages.extract.run` step by step, to keep the work unit's Stats (padding counts).

    Returns (Stats, CPU seconds of this process, all threads, during `Extractor.process`).
    `Stats.seconds` is the time of `Extractor.process`: decoding, preprocessing, backbone, flow and
    writes, not model loading. `models` (from `extract.load_models`) lets repeated runs share them.
    """
    models = models or load_models(cfg)
    work = extract.plan(cfg, models)
    device, backbone, flow_method, flow_backbone = models
    extractor = Extractor(cfg, work.store, device=device, backbone=backbone, flow_method=flow_method,
                          flow_backbone=flow_backbone)
    cpu = time.process_time()
    with extractor:
        stats = extractor.process(work.jobs)
    cpu = time.process_time() - cpu
    work.store.write_index()
    if stats.failed:
        raise SystemExit(f"benchmark videos failed: {[f.error for f in stats.failures]}")
    return stats, cpu


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# ---- speed -------------------------------------------------------------------------------------


def timed_limit(backbone, args) -> tuple[float, float]:
    """(pure forward frames/s, CPU seconds per frame including the 2 warm-up batches)."""
    cpu = time.process_time()
    rate = forward_limit(backbone, args.batch, args.limit_batches)
    return rate, (time.process_time() - cpu) / ((args.limit_batches + 2) * args.batch)


def speed(args, work: Path, videos: list[Path]) -> dict:
    manifest = write_manifest(work / "speed.csv", videos)
    print(f"\n== speed: {BACKBONE} end to end vs pure forward, {len(videos)} videos, batch {args.batch}, "
          f"{torch.get_num_threads()} torch threads, weights {args.weights}, {args.repeats} repeats ==")
    print(f"{'features':>8} {'rep':>3} {'limit fr/s':>10} {'e2e fr/s':>9} {'ratio':>6} {'limit cpu ms/fr':>15} "
          f"{'e2e cpu ms/fr':>13} {'cpu ratio':>9} {'padded':>9} {'load':>5}")
    stores, summary = {}, {}
    for features in ("pooled", "spatial"):
        backbone = build_backbone(BACKBONE, weights=args.weights, features=features, device="cpu")

        limits, rates, ratios, cpu_ratios = [], [], [], []
        before = timed_limit(backbone, args)
        for rep in range(args.repeats):
            store = work / f"speed-{features}.zarr"
            result, e2e_cpu = timed_extract(config(manifest, store, features=features, weights=args.weights,
                                                   batch_size=args.batch, device="cpu"))
            after = timed_limit(backbone, args)  # the limit around each run (mean of before and after) tracks load drift
            limit, limit_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            before = after
            rate = result.frames / result.seconds
            limits.append(limit)
            rates.append(rate)
            ratios.append(rate / limit)
            cpu_ratios.append(limit_cpu / (e2e_cpu / result.frames))
            padded = f"{result.padded_rows}/{result.batches * args.batch}"
            print(f"{features:>8} {rep:>3} {limit:>10.1f} {rate:>9.1f} {rate / limit:>6.2f} {limit_cpu * 1e3:>15.1f} "
                  f"{e2e_cpu / result.frames * 1e3:>13.1f} {cpu_ratios[-1]:>9.2f} {padded:>9} {load():>5}", flush=True)
        stores[features] = store
        summary[features] = (statistics.median(limits), statistics.median(rates), statistics.median(ratios),
                             statistics.median(cpu_ratios), result.frames)
    print(f"{'features':>8} {'frames':>7} {'limit fr/s':>10} {'e2e fr/s':>9} {'ratio (median)':>15} "
          f"{'cpu ratio (median)':>19}  target >= 0.85")
    for features, (limit, rate, ratio, cpu_ratio, frames) in summary.items():
        print(f"{features:>8} {frames:>7} {limit:>10.1f} {rate:>9.1f} {ratio:>15.2f} {cpu_ratio:>19.2f}")
    return stores


# ---- flow --------------------------------------------------------------------------------------


def flow_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The pipeline's flow resolution: shorter side `short_side`, even sides (pipeline.video)."""
    scale = short_side / min(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def naive_loop(videos: list[Path], out: Path, *, weights: str, max_frames: int, short_side: int):
    """The per-video script users run today; returns its (wall, CPU) seconds, models built beforehand."""
    import av
    import cv2

    backbone = build_backbone(BACKBONE, weights=weights, device="cpu")
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    out.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    for i, video in enumerate(videos):
        with av.open(str(video)) as container:
            frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(max_frames), container.decode(video=0))]
        size = flow_size(frames[0].shape[1], frames[0].shape[0], short_side)
        grey = [cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for f in frames]
        flow = np.stack([tvl1.calc(a, b, None) for a, b in zip(grey[:-1], grey[1:])])
        feats = backbone.forward_features(backbone.preprocess(torch.from_numpy(np.stack(frames)))).numpy()
        np.save(out / f"v{i:04d}_rgb.npy", feats)
        np.save(out / f"v{i:04d}_flow.npy", flow)
    return time.perf_counter() - start, time.process_time() - cpu


def flow(args, work: Path, videos: list[Path]) -> Path:
    manifest = write_manifest(work / "flow.csv", videos)
    frames = sum(min(args.flow_frames, probe_frames(v)) for v in videos)
    pairs = frames - len(videos)
    methods = args.flow_methods.split(",")
    print(f"\n== flow: --flow end to end vs the naive per-video loop, {len(videos)} videos x first "
          f"{args.flow_frames} frames = {frames} frames, {pairs} flow pairs at shorter side {args.flow_short_side}, "
          f"flow methods {', '.join(methods)} vs OpenCV DualTVL1, {args.repeats} repeats ==")
    for method in methods:  # the first call compiles torch kernels: pay it once, outside the timings
        warm = write_manifest(work / "flow-warmup.csv", videos[:1])
        start = time.perf_counter()
        timed_extract(config(warm, work / "warmup.zarr", weights=args.weights, flow=True, flow_method=method,
                             flow_short_side=args.flow_short_side, max_frames=3, batch_size=args.batch))
        print(f"one-off warm-up of {method} (torch.compile of the flow kernels, cached on disk afterwards): "
              f"{time.perf_counter() - start:.1f} s, not counted below")
    print(f"{'rep':>3} {'run':>18} {'wall s':>7} {'fr/s':>6} {'CPU s':>6} {'speed-up wall':>13} {'speed-up CPU':>12} "
          f"{'load':>5}")
    ups: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for rep in range(args.repeats):
        shutil.rmtree(work / "naive", ignore_errors=True)
        naive, naive_cpu = naive_loop(videos, work / "naive", weights=args.weights, max_frames=args.flow_frames,
                                      short_side=args.flow_short_side)
        print(f"{rep:>3} {'naive loop':>18} {naive:>7.1f} {frames / naive:>6.2f} {naive_cpu:>6.1f} {'':>13} {'':>12} "
              f"{load():>5}", flush=True)
        for method in methods:
            store = work / f"flow-{method}.zarr"
            stats, cpu = timed_extract(config(manifest, store, weights=args.weights, flow=True, flow_method=method,
                                              flow_short_side=args.flow_short_side, max_frames=args.flow_frames,
                                              batch_size=args.batch))
            ups[method].append((naive / stats.seconds, naive_cpu / cpu))
            print(f"{rep:>3} {'stpipe ' + method:>18} {stats.seconds:>7.1f} {stats.frames / stats.seconds:>6.2f} "
                  f"{cpu:>6.1f} {naive / stats.seconds:>13.2f} {naive_cpu / cpu:>12.2f} {load():>5}", flush=True)
    for method, values in ups.items():
        wall, cpu = (statistics.median(v) for v in zip(*values))
        print(f"stpipe --flow-method {method}: {wall:.2f}x the naive loop's speed (median, wall), "
              f"{cpu:.2f}x in CPU seconds; target >= 3x")
    return work / f"flow-{methods[0]}.zarr"


def probe_frames(video: Path) -> int:
    from pipeline.video import probe

    return probe(video).num_frames


# ---- bytes -------------------------------------------------------------------------------------


def disk_bytes(paths) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of files, recursing into folders."""
    size = blocks = 0
    for path in paths:
        files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [Path(path)]
        for f in files:
            st = f.stat()
            size += st.st_size
            blocks += st.st_blocks * 512
    return size, blocks


def store_array_bytes(store: Path, name: str) -> tuple[int, int, int]:
    """(apparent, allocated, frames) of array `name` over the complete videos of a store."""
    from pipeline.store import FeatureStore

    fs = FeatureStore.open(str(store))
    index = fs.index()
    keys = [str(k) for k, st in zip(index["key"], index["status"]) if st == "complete"]
    frames = int(sum(n for n, st in zip(index["num_frames"], index["status"]) if st == "complete"))
    size, blocks = disk_bytes(store / "videos" / k / name for k in keys)
    return size, blocks, frames


def jpeg_pairs(store: Path, out: Path) -> tuple[int, int, int]:
    """Write the store's uint8 flow as TSN/denseflow JPEG pairs (flow_x_*, flow_y_*, quality 95)."""
    import cv2

    from pipeline.store import FeatureStore

    fs = FeatureStore.open(str(store))
    out.mkdir(parents=True, exist_ok=True)
    pairs = 0
    for vid, _ in fs.iter_complete():
        q = fs.read(vid, "flow")  # (T-1, 2, H, W) uint8, the same quantisation as denseflow's bound 20
        folder = out / vid
        folder.mkdir(exist_ok=True)
        for t, field in enumerate(q):
            for axis, name in enumerate("xy"):
                cv2.imwrite(str(folder / f"flow_{name}_{t + 1:05d}.jpg"), field[axis], [cv2.IMWRITE_JPEG_QUALITY, 95])
        pairs += len(q)
    size, blocks = disk_bytes([out])
    return size, blocks, pairs


def bytes_per_frame(args, work: Path, stores: dict) -> None:
    print("\n== bytes on disk per frame (apparent / allocated on this filesystem) ==")
    print(f"{'what':>34} {'B/frame':>10} {'alloc B/frame':>13} {'vs float32 .npy':>15}")

    def row(what, size, blocks, frames, npy_per_frame=None):
        ratio = f"{npy_per_frame / (size / frames):>14.1f}x" if npy_per_frame else ""
        print(f"{what:>34} {size / frames:>10.0f} {blocks / frames:>13.0f} {ratio:>15}")

    for features, store in stores.items():
        if features == "flow":
            continue
        size, blocks, frames = store_array_bytes(store, "rgb")
        per_frame = 4 * int(np.prod(feature_shape(store)))
        row(f"{features} float32 .npy (computed)", per_frame * frames, per_frame * frames, frames)
        row(f"{features} stpipe float16 zstd", size, blocks, frames, per_frame)
    if "flow" in stores:
        store = stores["flow"]
        size, blocks, frames = store_array_bytes(store, "flow")
        pairs = frames - len(list((store / "videos").iterdir()))
        naive = work / "naive"
        npy = sorted(naive.glob("*_flow.npy"))
        nsize, nblocks = disk_bytes(npy)
        row("flow float32 .npy (naive loop)", nsize, nblocks, pairs)
        row("flow stpipe uint8 zstd", size, blocks, pairs, nsize / pairs)
        jsize, jblocks, jpairs = jpeg_pairs(store, work / "jpeg")
        row("flow TSN JPEG x/y pairs q95", jsize, jblocks, jpairs, nsize / pairs)
        print("(flow rows are per frame pair; the JPEGs hold the same uint8 quantisation, lossy on top)")


def feature_shape(store: Path) -> tuple[int, ...]:
    """Per-frame feature shape recorded by the store (D or C, h, w)."""
    from pipeline.store import FeatureStore

    fs = FeatureStore.open(str(store))
    vid = next(iter(fs.iter_complete()))[0]
    return tuple(fs.video_group(vid)["rgb"].shape[2:])


# ---- rss ---------------------------------------------------------------------------------------


def synthetic_video(path: Path, frames: int, width: int = 640, height: int = 480, fps: int = 25) -> Path:
    """A textured pattern drifting across the frame (MPEG-4 part 2, fast to encode and decode)."""
    import av

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    base = (rng.integers(0, 256, (height // 8, (width + frames) // 8 + 2, 3), dtype=np.uint8))
    base = np.repeat(np.repeat(base, 8, 0), 8, 1)
    tmp = path.with_suffix(".part.avi")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 2_000_000
        for t in range(frames):
            x = (t * 3) % (base.shape[1] - width)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, x : x + width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def peak_rss(cmd: list[str], log: Path) -> tuple[float, float, list[float]]:
    """Run `cmd`; return (peak RSS MiB, wall s, RSS MiB sampled every second).

    The peak is the child's own high-water mark (VmHWM of /proc/PID/status, polled every 0.1 s; it
    only grows, so polling misses at most the last 0.1 s). Not wait4's ru_maxrss: Linux carries the
    high-water mark of the mm a process had before exec into it, and a child forked from this big
    benchmark process would report this process's RSS as its own peak.
    """
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        samples, peak, last_sample = [], 0.0, 0.0
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(text.split("VmHWM:")[1].split()[0]) / 1024)
                if time.perf_counter() - last_sample >= 1.0:
                    samples.append(int(text.split("VmRSS:")[1].split()[0]) / 1024)
                    last_sample = time.perf_counter()
            except (OSError, IndexError):
                pass
            time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return peak, time.perf_counter() - start, samples


FORWARD_ONLY = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from pipeline.backbones import build_backbone
backbone = build_backbone(sys.argv[2], weights=sys.argv[3], device="cpu")
x = torch.zeros(int(sys.argv[4]), 3, 224, 224)
for _ in range(3):
    backbone.forward_features(x)
"""


def rss(args, work: Path) -> None:
    print(f"\n== rss: peak RSS of `stpipe extract` on one long synthetic 640x480 video ({BACKBONE}, CPU) ==")
    print("floor = a process that only imports torch, builds the backbone and runs 3 forwards of one batch "
          f"(median of {args.repeats}; it varies by a few hundred MiB from run to run)")
    print(f"{'run':>22} {'batch':>5} {'frames':>7} {'wall s':>7} {'peak MiB':>9} {'RSS at 25/50/75/100% of the run':>32}")
    for batch in args.rss_batches:
        floors = [peak_rss([sys.executable, "-c", FORWARD_ONLY, str(REPO), BACKBONE, args.weights, str(batch)],
                           work / "floor.log")[0] for _ in range(args.repeats)]
        print(f"{'floor: forward only':>22} {batch:>5} {'':>7} {'':>7} {statistics.median(floors):>9.0f}", flush=True)
        runs = [("pooled", frames, []) for frames in (args.rss_frames // 10, args.rss_frames)]
        if args.rss_flow_frames:
            flow = ["--flow", "--flow-method", args.rss_flow_method]
            runs += [(f"pooled --flow ({args.rss_flow_method})", frames, flow)
                     for frames in (args.rss_flow_frames // 10, args.rss_flow_frames)]
        for name, frames, extra in runs:
            video = synthetic_video(work / f"long-{frames}.avi", frames)
            manifest = write_manifest(work / f"long-{frames}.csv", [video])
            cmd = [sys.executable, str(REPO / "cli.py"), "extract", "-m", str(manifest), "-o",
                   str(work / "long.zarr"), "--backbone", BACKBONE, "--weights", args.weights, "--executor", "local",
                   "--device", "cpu", "--batch-size", str(batch), "--overwrite", *extra]
            peak, wall, samples = peak_rss(cmd, work / f"long-{frames}.log")
            marks = [samples[min(len(samples) - 1, int(q * len(samples)))] for q in (0.25, 0.5, 0.75, 0.999)]
            print(f"{name:>22} {batch:>5} {frames:>7} {wall:>7.0f} {peak:>9.0f} "
                  f"{' / '.join(f'{m:.0f}' for m in marks) if samples else '':>32}", flush=True)
    print("target: peak < 2048 MiB and not growing with the video's length")


# ---- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="speed,flow,bytes,rss")
    parser.add_argument("--videos", default=str(default_assets() / "videos"),
                        help="folder holding the shared clips (default: $STPIPE_ASSETS/videos, else ../shared/assets/videos)")
    parser.add_argument("--clips", default=",".join(CLIPS), help="comma-separated clip names in --videos")
    parser.add_argument("--copies", type=int, default=1, help="speed: times the clip set is repeated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="backbone batch (ExtractConfig.batch_size)")
    parser.add_argument("--limit-batches", type=int, default=4, help="timed batches per forward_limit")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the compute thread (0 = default)")
    parser.add_argument("--weights", default="auto", help="auto (IMAGENET1K_V1 if cached, else none), or any")
    parser.add_argument("--flow-frames", type=int, default=16, help="flow: first frames of each clip")
    parser.add_argument("--flow-methods", default="tvl1,tvl1-opencv",
                        help="flow: stpipe flow methods to run (comma-separated)")
    parser.add_argument("--flow-short-side", type=int, default=256)
    parser.add_argument("--rss-frames", type=int, default=10_000)
    parser.add_argument("--rss-batches", type=lambda v: [int(b) for b in v.split(",")], default=[64],
                        help="rss: backbone batch sizes to run (comma-separated)")
    parser.add_argument("--rss-flow-frames", type=int, default=0, help="rss: also --flow runs this long (0 = skip)")
    parser.add_argument("--rss-flow-method", default="tvl1-faster",
                        help="rss: flow method of those runs (memory does not depend on the iteration counts)")
    parser.add_argument("--work", help="keep inputs and stores here (default: a temp folder, removed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.weights = pick_weights(args.weights)
    sections = set(args.sections.split(","))
    clips = [Path(args.videos) / c for c in args.clips.split(",")]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="stpipe-bench-extract-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, load {load()}, weights {args.weights}, work {work}")
    try:
        stores = {}
        if "speed" in sections:
            stores.update(speed(args, work, clips * args.copies))
        elif "bytes" in sections:  # the stores only
            manifest = write_manifest(work / "bytes.csv", clips)
            for features in ("pooled", "spatial"):
                stores[features] = work / f"bytes-{features}.zarr"
                timed_extract(config(manifest, stores[features], features=features, weights=args.weights))
        if "flow" in sections or "bytes" in sections:
            stores["flow"] = flow(args, work, clips)
        if "bytes" in sections:
            bytes_per_frame(args, work, stores)
        if "rss" in sections:
            rss(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
