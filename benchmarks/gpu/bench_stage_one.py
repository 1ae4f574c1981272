"""Stage one on a GPU: `extract` end to end vs the bare backbone forward and CPU decoding on all cores.

For mobilenet_v2 and resnet50 (random init: speed does not depend on the weights, and the GPU host
may not hold ImageNet files), pooled features, float32 and bf16 autocast (`extract --amp bf16`):

  forward  frames/s of `Backbone.forward_features` on a preprocessed batch already on the GPU
           (`forward_limit` of benchmarks/bench_backbones.py), at each of --batches
  decode   the decode threads' whole work (PyAV decode at the backbone's resize, uint8 centre crop)
           in one process per core (--decode-procs, default all cores; FFmpeg limited to one thread
           each), every process decoding every clip once, started together: total frames/s
  e2e      `Extractor.process` (the in-process executor, --decode-threads decoder threads, default
           all cores; features written to a local Zarr store) on a manifest of the clips repeated
           --repeats times, at each of --batches, after a short warm-up run of the same config

limit = min(forward at that precision and batch, decode); ratio = e2e / limit (target >= 0.85).
Peak GPU memory (torch.cuda.max_memory_allocated) of each forward and e2e run.

Run on the GPU host: `python benchmarks/gpu/bench_stage_one.py --clips CLIPS --out OUT`
(CLIPS default: $STPIPE_ASSETS/videos, else ../shared/assets/videos). `--dry-run` runs every
path on the CPU in seconds with the tiny backbones and a few frames (its numbers mean nothing).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]  # these helpers, the CPU benchmarks, the project

from bench_backbones import forward_limit  # noqa: E402
from bench_extract import timed_extract, write_manifest  # noqa: E402
from common import (  # noqa: E402
    PeakMemory,
    default_clips,
    device_for,
    environment,
    find_clips,
    parser,
    table,
    write_results,
)

from pipeline.backbones import build_backbone  # noqa: E402
from pipeline.extraction import ExtractConfig  # noqa: E402
from pipeline.extraction.models import load_models  # noqa: E402

PRECISIONS = {"fp32": "", "bf16": "bf16"}  # name -> ExtractConfig.amp


# ---- decode on all cores ----------------------------------------------------------------------


def _decode_worker(clips, resize, crop, max_frames, barrier, results) -> None:
    """One process, one core: decode every clip as the extractor's decode threads do, once."""
    torch.set_num_threads(1)
    from pipeline.backbones.preprocess import ImagePreprocess
    from pipeline.video import FrameSelection, iter_chunks
    from pipeline.views import make_views

    pre = ImagePreprocess(resize_size=resize, crop_size=crop, mean=[0.0] * 3, std=[1.0] * 3)
    select = FrameSelection(max_frames=max_frames)

    def decode_all(paths) -> int:
        frames = 0
        for path in paths:
            for chunk in iter_chunks(path, select=select, short_side=min(resize), chunk_size=64, threads=1):
                make_views(pre.resize(torch.from_numpy(chunk.frames)), views="center", size=crop)
                frames += len(chunk.indices)
        return frames

    decode_all(clips[:1])  # warm-up: imports, codec set-up
    barrier.wait(timeout=300)  # a worker that died breaks the barrier instead of hanging the others
    start = time.time()
    frames = decode_all(clips)
    results.put((frames, start, time.time()))


def decode_rate(clips: list[Path], resize: list[int], crop: int, procs: int, max_frames: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_decode_worker, args=([str(c) for c in clips], resize, crop, max_frames,
                                                        barrier, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    try:
        got = [results.get(timeout=300) for _ in workers]
    except queue.Empty:
        raise SystemExit("a CPU decode process did not report within 300 s (see its traceback above)") from None
    finally:
        for w in workers:
            w.join(timeout=10)
    frames = sum(g[0] for g in got)
    seconds = max(g[2] for g in got) - min(g[1] for g in got)
    per_process = statistics.median(g[0] / (g[2] - g[1]) for g in got)
    return {"processes": procs, "frames": frames, "seconds": seconds, "fps": frames / seconds,
            "fps_per_process": per_process}


# ---- forward and end to end --------------------------------------------------------------------


def extract_config(manifest: Path, store: Path, backbone: str, precision: str, batch: int, args,
                   device: torch.device, **kw) -> ExtractConfig:
    return ExtractConfig(manifest=str(manifest), output=str(store), backbone=backbone, weights="none",
                         executor="local", overwrite=True, batch_size=batch, decode_threads=args.decode_threads,
                         decode_procs=args.decode_procs,
                         device=str(device), amp=PRECISIONS[precision], max_frames=args.max_frames, **kw)


def forward(backbone, batch: int, args, device: torch.device) -> dict:
    with PeakMemory(device) as peak:
        fps = forward_limit(backbone, batch, args.forward_batches)
    return {"fps": fps, "peak_gib": peak.gib}


def run_extract(cfg: ExtractConfig, models):
    """`stages.extract.run` with models already built: (Stats, CPU seconds of `Extractor.process`)."""
    return timed_extract(cfg, (models[0], models[1], None, None))


def end_to_end(models, name: str, precision: str, batch: int, args, device, work: Path, manifest: Path,
               warm_manifest: Path) -> dict:
    warm = extract_config(warm_manifest, work / "warm.zarr", name, precision, batch, args, device)
    run_extract(warm, models)  # cuDNN's first calls at this shape and precision, thread start-up
    cfg = extract_config(manifest, work / "e2e.zarr", name, precision, batch, args, device)
    with PeakMemory(device) as peak:
        stats, cpu = run_extract(cfg, models)
    return {"fps": stats.frames / stats.seconds, "frames": stats.frames, "seconds": stats.seconds,
            "cpu_seconds": cpu, "batches": stats.batches, "padded_rows": stats.padded_rows, "peak_gib": peak.gib}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=Path, default=default_clips(), help="folder of video clips")
    p.add_argument("--backbones", default="mobilenet_v2,resnet50")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--batches", default="64,256", help="backbone batch sizes (frames per forward)")
    p.add_argument("--repeats", type=int, default=12, help="times each clip appears in the e2e manifest")
    p.add_argument("--max-frames", type=int, default=0, help="frames per clip (0 = all)")
    p.add_argument("--decode-procs", type=int, default=os.cpu_count())
    p.add_argument("--decode-threads", type=int, default=os.cpu_count(), help="extractor decoder threads")
    p.add_argument("--forward-batches", type=int, default=10, help="timed batches per forward measurement")
    p.add_argument("--work", default=None, help="scratch folder for stores (default: a temporary one)")
    args = p.parse_args()
    if args.dry_run:  # every path, tiny sizes
        args.backbones, args.batches, args.repeats, args.max_frames = "tiny,tiny_resnet", "8", 1, 12
        args.decode_procs, args.decode_threads, args.forward_batches = 2, 2, 2
        torch.set_num_threads(1)  # a shared CPU: OpenMP barriers stall when a thread is descheduled
    device = device_for(args)
    backbones, precisions = args.backbones.split(","), args.precisions.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    started = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="stpipe-gpu-stage-one-"))
    work.mkdir(parents=True, exist_ok=True)
    clips = find_clips(args.clips, args.dry_run, work)
    manifest = write_manifest(work / "e2e.csv", clips * args.repeats)
    warm_manifest = write_manifest(work / "warm.csv", clips[:1])
    env = environment(device)
    print(f"stage one on {env.get('gpu', device)}; {env['cpu_cores']} cores, load {env['load_average']:.1f}; "
          f"{len(clips)} clips x {args.repeats} repeats; random-init weights; pooled features")

    metas = {name: build_backbone(name, weights="none", device="cpu").meta for name in backbones}
    decodes = {}
    for meta in metas.values():  # one decode measurement per distinct input size (the same for both defaults)
        key = (tuple(meta["resize_size"]), meta["input_size"][0])
        if key not in decodes:
            decodes[key] = decode_rate(clips, list(key[0]), key[1], args.decode_procs, args.max_frames)
            d = decodes[key]
            print(f"CPU decode, resize {list(key[0])} crop {key[1]}: {d['fps']:,.0f} frames/s on {d['processes']} "
                  f"processes ({d['fps_per_process']:,.0f} per process, median)", flush=True)

    rows = []
    for name, meta in metas.items():
        decode = decodes[(tuple(meta["resize_size"]), meta["input_size"][0])]
        for precision in precisions:
            models = load_models(extract_config(manifest, work / "e2e.zarr", name, precision, 0, args, device))
            for batch in batches:
                fwd = forward(models[1], batch, args, device)
                e2e = end_to_end(models, name, precision, batch, args, device, work, manifest, warm_manifest)
                limit = min(fwd["fps"], decode["fps"])
                rows.append({"backbone": name, "precision": precision, "batch": batch, "forward": fwd, "e2e": e2e,
                             "decode_fps": decode["fps"], "limit_fps": limit, "bound": "forward" if fwd["fps"] < decode["fps"] else "decode",
                             "ratio": e2e["fps"] / limit})
                print(f"  {name} {precision} batch {batch}: forward {fwd['fps']:,.0f}, e2e {e2e['fps']:,.0f} frames/s",
                      flush=True)
    table("stage one, pooled, frames/s (target: e2e / limit >= 0.85)",
          ["backbone", "prec", "batch", "forward", "CPU decode", "limit", "bound", "e2e", "e2e/limit",
           "fwd GiB", "e2e GiB", "padded"],
          [[r["backbone"], r["precision"], r["batch"], r["forward"]["fps"], r["decode_fps"], r["limit_fps"], r["bound"],
            r["e2e"]["fps"], r["ratio"], r["forward"]["peak_gib"], r["e2e"]["peak_gib"],
            f"{r['e2e']['padded_rows']}/{r['e2e']['batches'] * r['batch']}"] for r in rows])
    results = {"environment": env, "dry_run": args.dry_run, "weights": "none (random init)",
               "clips": [c.name for c in clips], "repeats": args.repeats, "max_frames": args.max_frames,
               "decode_threads": args.decode_threads,
               "decode": [{"resize": list(k[0]), "crop": k[1], **v} for k, v in decodes.items()], "rows": rows,
               "seconds": time.perf_counter() - started}
    write_results(args.out, "stage_one", results)
    print(f"total {results['seconds']:.0f} s; load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
