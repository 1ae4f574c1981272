"""A full ablation on Ray vs the same trials one after another in one process; overhead and memory.

Store: generated directly (no videos): `--videos` (default 5,000) pooled videos, 1280-d float16
per frame (MobileNetV2's width), 16-32 frames, one view, 20 classes in time-reversed pairs (the
class is in the order of the frames, as in the demo), 80% train / 20% val. Built once under
`--work` and reused.

1. Wall time: every pooled head x 2 segment counts x 3 seeds, few epochs (`--epochs`), on an
   embedded Ray with 1 CPU per trial (so as many trials side by side as there are cores) vs
   `--executor local` (one process, trials in sequence, torch on `--local-threads` threads; all
   cores by default). Same trials, same store, lr 0.01, proj_dim 64, batch 64.
2. Overhead per trial: wall time of a trial (Ray: from submit to result at the driver) minus the
   time its epochs took (training steps + per-epoch validation); median and 90th percentile.
3. Memory with 4 trials running (`--memory-trials 4` concurrent trials on a 4-slot Ray): the
   object store's physical pages (sum of PSS of its mapping over all processes) next to the
   features' size and next to what each worker maps (RSS of the mapping); total PSS of the driver
   and every Ray process; the trial workers' own (private) memory.

Run: `.venv/bin/python benchmarks/bench_ablate.py [--videos 5000] [--epochs 2] [--local-threads 2,1]
[--work /tmp/stpipe-bench-ablate]`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.ablation import AblateConfig  # noqa: E402
from pipeline.distributed import ray_session  # noqa: E402
from pipeline.heads import HEADS  # noqa: E402
from pipeline.store import FeatureStore, config_hash  # noqa: E402
from stages import ablate  # noqa: E402

DIM = 1280
CLASSES = 20


def make_store(path: Path, videos: int, seed: int = 0) -> FeatureStore:
    """Pooled store of `videos` videos whose class is only in the order of their frames."""
    done = path / "zarr.json"
    if done.is_file():
        store = FeatureStore.open(str(path))
        if len(store.index()["video_id"]) == videos:
            return store
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    classes = [f"class_{c:02d}" for c in range(CLASSES)]
    config = {"backbone": "synthetic", "features": "pooled", "dim": DIM, "videos": videos, "seed": seed}
    provenance = {"classes": classes, "config": config, "config_hash": config_hash(config),
                  "backbone": {"name": "synthetic", "features": "pooled", "dim": DIM}}
    store = FeatureStore.create(str(path), provenance=provenance)
    patterns = rng.normal(size=(CLASSES // 2, 2, DIM)).astype(np.float32)
    started = time.perf_counter()
    for i in range(videos):
        label = i % CLASSES
        length = int(rng.integers(16, 33))
        a, b = patterns[label // 2][:: -1 if label % 2 else 1]
        p = np.linspace(0, 1, length, dtype=np.float32)[:, None]
        x = ((1 - p) * a + p * b + 1.5 * rng.normal(size=(length, DIM)).astype(np.float32))[None].astype(np.float16)
        writer = store.begin_video(f"v{i:06d}", {"label": classes[label], "label_index": label,
                                                 "split": "val" if i % 5 == 0 else "train"})
        writer.write("rgb", x, dims=("view", "time", "channel"), time_axis=1)
        writer.finish(num_frames=length)
        if i % 1000 == 999:
            print(f"  store: {i + 1}/{videos} videos ({time.perf_counter() - started:.0f} s)", flush=True)
    store.write_index()
    return store


# ---- memory: PSS/RSS/USS from /proc --------------------------------------------------------------


def _ray_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ray::" in cmd or "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd:
            pids.append(int(entry))
    return pids


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _smaps(pid: int, min_bytes: int) -> dict[str, int]:
    """{'rss', 'pss', 'uss', 'store_rss', 'store_pss'} in bytes; store_* = shared mappings of at
    least `min_bytes` backed by shared memory (Ray's object store)."""
    out = dict(rss=0, pss=0, uss=0, store_rss=0, store_pss=0)
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return out
    current_store = False
    for line in lines:
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping header
            lo, hi = (int(v, 16) for v in head[0].split("-"))
            name = " ".join(head[5:])
            current_store = (hi - lo) >= min_bytes and ("plasma" in name or "/dev/shm" in name or "memfd" in name)
            continue
        key, value = head[0].rstrip(":"), head[1] if len(head) > 1 else "0"
        if not value.isdigit():
            continue
        kb = int(value) * 1024
        if key == "Rss":
            out["rss"] += kb
            if current_store:
                out["store_rss"] += kb
        elif key == "Pss":
            out["pss"] += kb
            if current_store:
                out["store_pss"] += kb
        elif key in ("Private_Clean", "Private_Dirty"):
            out["uss"] += kb
    return out


class MemorySampler:
    """Samples every process of the Ray session (and this driver) while 4 trials run."""

    def __init__(self, min_store_bytes: int):
        self.min_store_bytes = min_store_bytes
        self.running = 0
        self.best: dict | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.wait(0.5):
            if self.running < 4:
                continue
            pids = [os.getpid(), *_ray_pids()]
            per = {pid: _smaps(pid, self.min_store_bytes) for pid in pids}
            trials = [pid for pid in pids if "run_trial" in _cmd(pid)]
            sample = {
                "total_pss": sum(v["pss"] for v in per.values()),
                "store_pss": sum(v["store_pss"] for v in per.values()),
                "trial_store_rss": [per[p]["store_rss"] for p in trials],
                "trial_uss": [per[p]["uss"] for p in trials],
                "trial_rss": [per[p]["rss"] for p in trials],
                "trial_pss": sum(per[p]["pss"] for p in trials),
                "running": self.running,
            }
            if len(trials) >= 4 and (self.best is None or sample["total_pss"] > self.best["total_pss"]):
                self.best = sample


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def overheads(records) -> list[float]:
    out = []
    for r in records:
        m = r.metrics
        wall = m["_seconds"] + m.get("dispatch_seconds", 0.0)
        out.append(wall - m["train_seconds"])
    return out


def run(cfg: AblateConfig, *, num_cpus: int | None = None, progress=None):
    seconds: dict = {}

    def keep(event):
        p = getattr(event, "item", None)  # a trial's TrialUpdate (pipeline.progress.Advanced)
        if p is None or not hasattr(p, "trial"):
            return
        if p.kind == "done":
            p.outcome.metrics["_seconds"] = p.outcome.seconds
        if progress is not None:
            progress(p)

    started = time.perf_counter()
    if cfg.executor == "ray":
        with ray_session("", num_cpus=num_cpus):
            result = ablate.run(cfg, progress=keep)
    else:
        result = ablate.run(cfg, progress=keep)
    seconds["wall"] = time.perf_counter() - started
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--segments", default="4,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--proj-dim", type=int, default=64)
    parser.add_argument("--work", default="/tmp/stpipe-bench-ablate")
    parser.add_argument("--local-threads", default=str(os.cpu_count() or 1),
                        help="torch threads of the in-process baseline runs, comma-separated (e.g. 2,1); '' = none")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(args.work)
    store = make_store(work / "store.zarr", args.videos)
    pooled = [h for h in HEADS.names() if HEADS.meta(h)["input_kind"] == "pooled"]
    train = {"epochs": args.epochs, "lr": 0.01, "proj_dim": args.proj_dim, "batch_size": 64}
    base = dict(store=store.url, heads=("all",), segments=tuple(int(s) for s in args.segments.split(",")),
                seeds=tuple(int(s) for s in args.seeds.split(",")), train=train, overwrite=True)
    trials = len(pooled) * len(base["segments"]) * len(base["seeds"])
    print(f"store: {args.videos} videos, {len(pooled)} pooled heads x {len(base['segments'])} segment counts x "
          f"{len(base['seeds'])} seeds = {trials} trials, {args.epochs} epochs each; {os.cpu_count()} CPUs")

    ray_result, ray_time = run(AblateConfig(**base, out=str(work / "ray"), executor="ray", cpus_per_trial=1))
    print(f"ray: {ray_time['wall']:.1f} s (features {mib(ray_result.shared_bytes)}, loaded in "
          f"{ray_result.load_seconds:.1f} s)", flush=True)
    rows = [("Ray, 1 CPU per trial", ray_time["wall"], ray_result)]
    import torch

    for threads in [int(t) for t in args.local_threads.split(",") if t]:
        torch.set_num_threads(threads)
        local_result, local_time = run(AblateConfig(**base, out=str(work / f"local{threads}"), executor="local",
                                                    device="cpu"))
        print(f"local: {local_time['wall']:.1f} s (torch threads {threads})", flush=True)
        rows.append((f"one process, in sequence ({threads} torch thread{'s' if threads > 1 else ''})",
                     local_time["wall"], local_result))

    print("\n| run | trials | wall | trials/min | sum of epoch time | overhead/trial median | p90 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, wall, result in rows:
        ok = [r for r in result.records if r.status == "ok"]
        over = sorted(overheads(ok))
        epochs = sum(r.metrics["train_seconds"] for r in ok)
        print(f"| {name} | {len(ok)}/{len(result.records)} | {wall:.0f} s | {60 * len(ok) / wall:.1f} | {epochs:.0f} s "
              f"| {statistics.median(over):.2f} s | {over[int(0.9 * (len(over) - 1))]:.2f} s |")
    for name, wall, _ in rows[1:]:
        print(f"speed-up of Ray over {name}: {wall / rows[0][1]:.2f}x")

    # memory with 4 trials side by side: longer trials so the sampler sees all four running
    sampler = MemorySampler(min_store_bytes=int(ray_result.shared_bytes * 0.5))
    sampler.thread.start()

    def watch(p):
        sampler.running = p.running

    mem_cfg = AblateConfig(store=store.url, out=str(work / "memory"), heads=("mlp", "lstm", "gru", "trn_multiscale"),
                           segments=(8,), seeds=(0,), train={**train, "epochs": max(3, args.epochs)},
                           executor="ray", cpus_per_trial=1, max_concurrent=4, overwrite=True)
    mem_result, _ = run(mem_cfg, num_cpus=4, progress=watch)
    sampler.stop.set()
    best = sampler.best
    features = mem_result.shared_bytes
    print(f"\nmemory with 4 trials running (features in memory: {mib(features)}):")
    if best is None:
        print("  the sampler never saw 4 trials at once (trials too short); raise --epochs")
        return
    own = sum(best["trial_uss"])
    print("| what | measured |\n|---|---:|")
    print(f"| features (one copy, in the object store) | {mib(features)} |")
    print(f"| object store pages in RAM (sum of PSS of its mapping over all processes) | {mib(best['store_pss'])} |")
    print(f"| features mapped by each trial worker (RSS of the mapping) | "
          f"{', '.join(mib(v) for v in best['trial_store_rss'])} |")
    print(f"| trial workers' own memory (USS: torch, model, optimizer, batch buffers) | "
          f"{', '.join(mib(v) for v in best['trial_uss'])} (sum {mib(own)}) |")
    print(f"| trial workers' RSS each (counts the shared features and libraries in each) | "
          f"{', '.join(mib(v) for v in best['trial_rss'])} |")
    print(f"| **the 4 trial workers together (sum of PSS)** | **{mib(best['trial_pss'])}** |")
    print(f"| one copy of the features + the 4 trials' own memory | {mib(features + own)} |")
    print(f"| a copy per trial: 4 x features + the trials' own memory | {mib(4 * features + own)} |")
    print(f"| everything: driver + raylet + GCS + idle workers + trials (sum of PSS) | {mib(best['total_pss'])} |")

if __name__ == "__main__":
    main()
