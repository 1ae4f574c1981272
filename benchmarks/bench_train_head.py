"""Stage two's speed: training samples/s of heads vs their compute limit and vs a naive loader.

Generates (once, cached under --work) a pooled store shaped like Something-Something v2's training
split (1280-d float16 per frame, 174 classes, 30-50 frames per video, one view) with --videos videos
(default 10,000, ~1 GB of features; SSv2 train has 168,913 = 17.3 GB, which does not fit beside the
other engineers on this 2-core, 23 GB machine), plus the naive baseline's copies: one .npy per video,
float16 (view, time, dim) as in the store, and float32 (time, dim) as feature extractors such as
video_features write them.

Prints, side by side, at batch 256 and 8 segments:
- per head (mlp, trn_multiscale, lstm): the compute limit (forward + backward + SGD step on a batch
  already in memory), our end-to-end rate (`pipeline.training.loop.train`, its own samples/s over
  the training steps), and the naive rate (a torch DataLoader over the .npy files with TSN sampling
  in `__getitem__`, 2 workers, same step);
- the data path alone (float32 batches of sampled segment features per second, no model): ours
  (`MemoryFeatures.iterate` over an epoch's plans, as the training loop draws them), a simple
  in-memory per-sample gather (list of per-video tensors, Python loop, torch.stack), and the naive
  DataLoader over the float16 files and over the float32 files;
- time from process start to the first finished training step of `stages.train_head.run` (store
  open + load + model build) and the peak RSS of that process, in a fresh subprocess.

Rates are medians over repeats, the contenders of a row measured alternately (the machine is
shared). Run: `.venv/bin/python benchmarks/bench_train_head.py [--videos 10000]
[--work /tmp/stpipe-bench-train-head] [--repeats 5] [--steps 8] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

START = time.perf_counter()  # for --first-step: process start (before torch is imported)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.store import FeatureStore, config_hash  # noqa: E402

DIM, CLASSES, SEGMENTS, BATCH = 1280, 174, 8, 256
HEADS = ("mlp", "trn_multiscale", "lstm")


# ---- data -----------------------------------------------------------------------------------------


def generate(work: Path, videos: int, seed: int = 0) -> tuple[str, Path, Path]:
    """The store, the float16 .npy files (view, time, dim) and the float32 ones (time, dim)."""
    store_url, npy_dir, npy32_dir = str(work / "store.zarr"), work / "npy", work / "npy32"
    marker = work / f"ready-{videos}-v2"
    if marker.is_file():
        return store_url, npy_dir, npy32_dir
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    npy_dir.mkdir(parents=True)
    npy32_dir.mkdir()
    config = {"backbone": "synthetic-ssv2", "features": "pooled", "dim": DIM, "videos": videos}
    store = FeatureStore.create(store_url, provenance={
        "classes": [f"c{i}" for i in range(CLASSES)], "config": config, "config_hash": config_hash(config),
        "backbone": {"name": "synthetic", "features": "pooled", "dim": DIM}, "flow": None})
    rng = np.random.default_rng(seed)
    lengths = rng.integers(30, 51, videos)
    labels = rng.integers(0, CLASSES, videos)
    splits = np.where(np.arange(videos) < videos - 256, "train", "val")  # a small val: the loop evaluates it

    def write(i: int) -> None:
        local = np.random.default_rng(seed + 1 + i)
        feats = local.standard_normal((1, int(lengths[i]), DIM), dtype=np.float32).astype(np.float16)
        vid = f"v{i:06d}"
        writer = store.begin_video(vid, {"label": str(labels[i]), "label_index": int(labels[i]), "split": str(splits[i])})
        writer.write("rgb", feats, dims=("view", "time", "channel"), time_axis=1)
        writer.finish(num_frames=int(lengths[i]))
        np.save(npy_dir / f"{vid}.npy", feats)
        np.save(npy32_dir / f"{vid}.npy", feats[0].astype(np.float32))  # the same values, as extractors store them

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(videos)))
    store.write_index()
    for d in (npy_dir, npy32_dir):
        np.save(d / "labels.npy", labels[splits == "train"])
    marker.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return store_url, npy_dir, npy32_dir


class NaiveDataset(torch.utils.data.Dataset):
    """The usual baseline: one .npy per video, TSN sampling and a random view in __getitem__.

    Files are (view, time, dim) float16 (the store's layout) or (time, dim) float32 (one view, as
    feature extractors write them); either way a sample is (segments, dim) float32.
    """

    def __init__(self, npy_dir: Path, num_segments: int):
        self.paths = sorted(p for p in npy_dir.glob("v*.npy"))
        self.labels = np.load(npy_dir / "labels.npy")
        self.paths = self.paths[: len(self.labels)]  # the train split comes first
        self.num_segments = num_segments

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        feats = np.load(self.paths[i])  # (view, time, dim) float16 or (time, dim) float32
        if feats.ndim == 2:
            feats = feats[None]
        length, n = feats.shape[1], self.num_segments
        duration = length // n
        if duration > 0:
            idx = np.arange(n) * duration + np.random.randint(duration, size=n)
        else:
            idx = np.sort(np.random.randint(length, size=n))
        view = np.random.randint(feats.shape[0])
        return torch.from_numpy(feats[view, idx].astype(np.float32)), int(self.labels[i])


def naive_loader(npy_dir: Path, workers: int = 2, *, batch_size: int = BATCH, pin_memory: bool = False):
    return torch.utils.data.DataLoader(NaiveDataset(npy_dir, SEGMENTS), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                                       pin_memory=pin_memory)


# ---- measurements ---------------------------------------------------------------------------------
# Every measurement runs a fixed amount of work once and returns (samples per wall-clock second,
# samples per CPU-second). The CPU clock counts this process plus the DataLoader's worker processes,
# so on a machine shared with other jobs it measures what each approach costs, not how much of the
# cores it happened to get (a loader with 2 worker processes gets 3 shares of a contended machine).
# `interleaved` alternates the contenders repeat by repeat and reports medians.


def interleaved(contenders: dict, repeats: int) -> dict[str, tuple[float, float]]:
    for fn in contenders.values():
        fn()  # warm-up
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            rates[name].append(fn())
    return {name: (statistics.median(r[0] for r in values), statistics.median(r[1] for r in values))
            for name, values in rates.items()}


def cpu_seconds(pids=()) -> float:
    """CPU time of this process and of `pids` (read from /proc)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def worker_pids(loader) -> list[int]:
    iterator = getattr(loader, "_iterator", None)  # persistent workers live here
    return [w.pid for w in getattr(iterator, "_workers", [])]


def timed(fn, samples: int, pids=lambda: ()) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds(pids())
    fn()
    return samples / (time.perf_counter() - wall), samples / (cpu_seconds(pids()) - cpu)


def make_head(name: str):
    from pipeline.heads import build_head

    torch.manual_seed(0)
    head = build_head(name, num_classes=CLASSES, num_segments=SEGMENTS, in_dim=DIM)
    return head, torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)


def step(head, optimizer, x, y) -> None:
    loss = torch.nn.functional.cross_entropy(head(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def compute_limit(name: str, steps: int):
    """Forward + backward + SGD step on one batch already in memory: the head's own limit."""
    head, optimizer = make_head(name)
    head.train()
    x = torch.randn(BATCH, SEGMENTS, DIM)
    y = torch.randint(0, CLASSES, (BATCH,))

    def run():
        for _ in range(steps):
            step(head, optimizer, x, y)

    return lambda: timed(run, steps * BATCH)


def subset(split, count: int):
    """The first `count` videos of a split, still gathering from the split's full frames tensor."""
    from dataclasses import replace

    streams = {k: replace(v, offsets=v.offsets[:count], lengths=v.lengths[:count]) for k, v in split.streams.items()}
    return replace(split, video_ids=split.video_ids[:count], keys=split.keys[:count], labels=split.labels[:count],
                   streams=streams)


def ours_end_to_end(name: str, data, steps: int):
    """`loop.train`, one epoch of `steps` batches, clocked from its epoch start to its last step."""
    from pipeline.progress import Advanced, Started
    from pipeline.training.config import TrainHeadConfig
    from pipeline.training.loop import TrainData, train

    small = TrainData(subset(data.train, steps * BATCH), data.val, data.classes)
    # the paper's SGD recipe (SGD_RECIPE: projection 256): the step the compute-limit column times
    cfg = TrainHeadConfig(store="bench", head=name, segments=SEGMENTS, batch_size=BATCH, epochs=1, device="cpu",
                          recipe="paper")

    def run():
        clocks = {}

        def progress(event):
            if isinstance(event, Started):
                clocks["start"] = (time.perf_counter(), cpu_seconds())
            elif isinstance(event, Advanced):
                clocks["end"] = (time.perf_counter(), cpu_seconds())
                clocks["samples"] = clocks.get("samples", 0) + event.amounts["samples"]

        train(cfg, small, progress=progress)
        (w0, c0), (w1, c1) = clocks["start"], clocks["end"]
        return clocks["samples"] / (w1 - w0), clocks["samples"] / (c1 - c0)

    return run


def naive_end_to_end(name: str, loader, steps: int):
    head, optimizer = make_head(name)
    head.train()
    batches = _cycle(loader)

    def run():
        for _ in range(steps):
            x, y = next(batches)
            step(head, optimizer, x, y)

    return lambda: timed(run, steps * BATCH, lambda: worker_pids(loader))


def _cycle(loader):
    while True:
        yield from loader


def data_path_ours(split, batches: int):
    """`MemoryFeatures.iterate` over `batches` plans, as the training loop draws an epoch (the
    rows of all plans computed up front, then one gather + float32 conversion per batch)."""
    from pipeline.training.batches import MemoryFeatures, train_plans

    source = MemoryFeatures(split, device=torch.device("cpu"), num_segments=SEGMENTS, max_batch=BATCH)
    generator = torch.Generator().manual_seed(0)
    plans = [p for p in train_plans(len(split), BATCH, SEGMENTS, generator) if len(p.videos) == BATCH][:batches]

    def run():
        for _ in source.iterate(plans):
            pass

    return lambda: timed(run, len(plans) * BATCH)


def data_path_simple(split, batches: int):
    """Per-video tensors in a list; per-sample Python sampling and indexing; torch.stack."""
    s = split.streams["rgb"]
    videos = [torch.from_numpy(s.frames[0, o:o + n]) for o, n in zip(s.offsets.tolist(), s.lengths.tolist())]
    rng = np.random.default_rng(0)

    def run():
        for _ in range(batches):
            out = []
            for i in rng.integers(0, len(videos), BATCH):
                v = videos[i]
                duration = v.shape[0] // SEGMENTS
                idx = torch.from_numpy(np.arange(SEGMENTS) * duration + rng.integers(0, duration, SEGMENTS))
                out.append(v[idx].float())
            torch.stack(out)

    return lambda: timed(run, batches * BATCH)


def data_path_naive(loader, batches: int):
    it = _cycle(loader)

    def run():
        for _ in range(batches):
            next(it)

    return lambda: timed(run, batches * BATCH, lambda: worker_pids(loader))


def first_step(store_url: str, out: str) -> None:
    """Subprocess mode: time from process start to the first finished training step, peak RSS."""
    from pipeline.progress import Advanced
    from pipeline.training.config import TrainHeadConfig
    from stages import train_head

    class Done(Exception):
        pass

    def progress(event):
        if isinstance(event, Advanced) and event.task.startswith("epoch"):  # the first training step
            raise Done

    cfg = TrainHeadConfig(store=store_url, out=out, head="mlp", segments=SEGMENTS, batch_size=BATCH, device="cpu",
                          overwrite=True, recipe="paper")
    try:
        train_head.run(cfg, progress=progress)
    except Done:
        pass
    print(json.dumps({"seconds": time.perf_counter() - START,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--work", default="/tmp/stpipe-bench-train-head")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed repeat")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (1 is steadier when other processes load the cores: OpenMP "
                             "barriers stall when a thread is descheduled)")
    parser.add_argument("--first-step", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.first_step:
        first_step(*args.first_step)
        return

    work = Path(args.work)
    t0 = time.perf_counter()
    store_url, npy_dir, npy32_dir = generate(work, args.videos)
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores at start")
    print(f"store: {args.videos} videos x 30-50 frames x {DIM} float16 ({store_url}; generated/reused in "
          f"{time.perf_counter() - t0:.0f} s); batch {BATCH}, {SEGMENTS} segments, {CLASSES} classes, "
          f"{torch.get_num_threads()} torch threads")

    probe = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                            "--first-step", store_url, str(work / "run")],
                           capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    first = json.loads(probe.stdout.strip().splitlines()[-1])

    from pipeline.training.data import load_split
    from pipeline.training.loop import TrainData

    store = FeatureStore.open(store_url)
    t0 = time.perf_counter()
    train_split = load_split(store, "train")
    load_seconds = time.perf_counter() - t0
    data = TrainData(train_split, load_split(store, "val"), store.classes)
    loader = naive_loader(npy_dir)
    loader32 = naive_loader(npy32_dir)

    rows = []
    for name in HEADS:
        rates = interleaved({"limit": compute_limit(name, args.steps), "ours": ours_end_to_end(name, data, args.steps),
                             "naive": naive_end_to_end(name, loader, args.steps)}, args.repeats)
        rows.append((name, rates["limit"], rates["ours"], rates["naive"]))
    path = interleaved({"ours": data_path_ours(train_split, 40), "simple": data_path_simple(train_split, 4),
                        "naive": data_path_naive(loader, 8), "naive32": data_path_naive(loader32, 8)}, args.repeats)
    ours_dp, simple_dp, naive_dp, naive32_dp = path["ours"], path["simple"], path["naive"], path["naive32"]

    for title, k in (("wall-clock samples/s", 0), ("samples per CPU-second (this process + loader workers)", 1)):
        print(f"\ntraining, {title}, medians of {args.repeats}")
        print(f"{'head':16} {'compute limit':>14} {'ours e2e':>10} {'% of limit':>11} {'naive e2e':>10} {'ours/naive':>11}")
        for name, limit, ours, naive in rows:
            print(f"{name:16} {limit[k]:14,.0f} {ours[k]:10,.0f} {ours[k] / limit[k]:11.1%} {naive[k]:10,.0f} "
                  f"{ours[k] / naive[k]:10.1f}x")
        print(f"data path alone (float32 batches of sampled segment features, no model), {title}")
        print(f"{'  ours (MemoryFeatures.iterate)':50} {ours_dp[k]:12,.0f}")
        print(f"{'  simple in-memory per-sample gather':50} {simple_dp[k]:12,.0f}   ours is {ours_dp[k] / simple_dp[k]:.1f}x")
        print(f"{'  naive float16 .npy + DataLoader (2 workers)':50} {naive_dp[k]:12,.0f}   ours is {ours_dp[k] / naive_dp[k]:.1f}x")
        print(f"{'  naive float32 (T, D) .npy + DataLoader (2 workers)':50} {naive32_dp[k]:12,.0f}   "
              f"ours is {ours_dp[k] / naive32_dp[k]:.1f}x")
    gib = train_split.nbytes / 2**30
    print(f"\nload of the train split into one tensor: {load_seconds:.1f} s for {len(train_split)} videos, "
          f"{gib:.2f} GiB ({len(train_split) / load_seconds:,.0f} videos/s)")
    print(f"time to first training step (fresh process: imports, store open, load, model build, one step): "
          f"{first['seconds']:.1f} s; peak RSS {first['peak_rss_mib']:,.0f} MiB")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
