"""Ray's cost on one machine (issue 6): in-process executor vs embedded Ray, one run, side by side.

The shared clips repeated to `--videos` videos (first `--max-frames` frames of each, so the run takes
minutes on 2 cores; a short video is the worst case for per-video overhead), extracted with
mobilenet_v2 pooled by:

  local          `--executor local`: `Extractor.process` on the whole manifest in this process
  ray Nw         embedded Ray, N actors (`--workers N`, `--cpus-per-task` each, so Ray sets each
                 actor's OMP_NUM_THREADS to its CPUs), each running `Extractor.process` on batches
                 of videos it decodes itself

Start-up is reported apart from the extraction: `ray.init` (embedded local Ray, timed around
`pipeline.distributed.ray_session`) and actor start-up (new worker process, imports, model load;
timed on probe actors of the same class and resources, killed before the run). The extraction
itself is `ExtractResult.seconds` minus the actor start-up. Ray's per-video overhead is
(extraction with Ray - extraction in process) / videos: everything Ray adds that is not decoding,
computing or writing (task dispatch, result round trips, the pipeline draining at the end of each
call of a few videos, fewer torch threads per actor). Configurations alternate within each repeat;
medians over repeats.

Run: `TORCH_HOME=<cache with mobilenet_v2-b0353104.pth> .venv/bin/python benchmarks/bench_distributed.py`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_extract import CLIPS, load, pick_weights, write_manifest  # noqa: E402
from shared_assets import default_assets  # noqa: E402

from pipeline.extraction import ExtractConfig  # noqa: E402
from stages import extract  # noqa: E402


def actor_startup(cfg: ExtractConfig, workers: int) -> float:
    """Seconds until `workers` actors of the executor's class have loaded their models."""
    import ray

    from pipeline.distributed.extract import _worker_class

    worker_cfg = replace(cfg, device="cpu", executor="local")
    actor = _worker_class(ray).options(num_cpus=cfg.cpus_per_task, num_gpus=0)
    start = time.perf_counter()
    pool = [actor.remote(worker_cfg) for _ in range(workers)]
    ray.get([a.node.remote() for a in pool])
    seconds = time.perf_counter() - start
    for a in pool:
        ray.kill(a)
    time.sleep(1.0)  # let Ray return the killed actors' CPUs before the real run asks for them
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--max-frames", type=int, default=16, help="frames per video (0 = all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--weights", default="auto")
    parser.add_argument("--clips", default=str(default_assets() / "videos"),
                        help="folder holding the shared clips (default: $STPIPE_ASSETS/videos, else ../shared/assets/videos)")
    parser.add_argument("--configs", default="local,ray1,ray1x2,ray2",
                        help="local; rayN = N workers x 1 CPU; rayNxC = N workers x C CPUs")
    args = parser.parse_args()
    weights = pick_weights(args.weights)
    clips = [Path(args.clips) / c for c in CLIPS]
    videos = [clips[i % len(clips)] for i in range(args.videos)]
    work = Path(tempfile.mkdtemp(prefix="stpipe-bench-dist-"))
    manifest = write_manifest(work / "m.csv", videos)
    base = ExtractConfig(manifest=str(manifest), output=str(work / "s.zarr"), backbone="mobilenet_v2", weights=weights,
                         max_frames=args.max_frames, batch_size=args.batch, device="cpu", overwrite=True)
    configs = {}
    for name in args.configs.split(","):
        if name == "local":
            configs[name] = replace(base, executor="local")
        else:
            workers, _, cpus = name.removeprefix("ray").partition("x")
            configs[name] = replace(base, executor="ray", workers=int(workers), cpus_per_task=float(cpus or 1))
    print(f"{os.cpu_count()} cores, load {load()}, weights {weights}, {args.videos} videos x <= {args.max_frames} "
          f"frames, batch {args.batch}, {args.repeats} repeats")

    from pipeline.distributed import ray_session

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    with ray_session():
        init = time.perf_counter() - start
        print(f"ray.init (embedded local Ray): {init:.1f} s")
        print(f"{'config':>8} {'rep':>3} {'frames':>6} {'actor start s':>13} {'extraction s':>12} {'fr/s':>6} "
              f"{'vs local':>8} {'overhead ms/video':>17} {'load':>5}")
        rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configs}
        for rep in range(args.repeats):
            names = list(configs) if rep % 2 == 0 else list(configs)[::-1]
            local_s = None
            results = {}
            for name in names:
                cfg = configs[name]
                startup = actor_startup(cfg, cfg.workers) if cfg.executor == "ray" else 0.0
                shutil.rmtree(work / "s.zarr", ignore_errors=True)
                result = extract.run(cfg)
                if result.failed or result.done != args.videos:
                    raise SystemExit(f"{name}: {result.failed} failed, {result.done} done: {result.failures[:3]}")
                results[name] = (startup, result.seconds - startup, result.frames)
            local_s = results["local"][1] if "local" in results else None
            for name in configs:
                startup, seconds, frames = results[name]
                ratio = seconds / local_s if local_s else float("nan")
                overhead = (seconds - local_s) / args.videos * 1e3 if local_s else float("nan")
                rows[name].append((startup, seconds, ratio))
                print(f"{name:>8} {rep:>3} {frames:>6} {startup:>13.1f} {seconds:>12.1f} {frames / seconds:>6.1f} "
                      f"{ratio:>8.3f} {overhead:>17.0f} {load():>5}", flush=True)
        print(f"{'config':>8} {'actor start s':>13} {'extraction s':>12} {'vs local (median)':>18}  target <= 1.05")
        for name, values in rows.items():
            startup, seconds, ratio = (statistics.median(v) for v in zip(*values))
            print(f"{name:>8} {startup:>13.1f} {seconds:>12.1f} {ratio:>18.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
