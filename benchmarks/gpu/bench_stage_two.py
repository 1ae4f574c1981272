"""Stage two on a GPU: the training data path vs a naive loader, and samples/s vs the head's compute limit.

Features shaped like Something-Something v2's pooled ones (1280-d float16 per frame, 174 classes,
30-50 frames per video, one view; random values: speed does not depend on them), --videos videos
held as train-head holds a split in memory; the naive baseline reads the same values from one
float16 .npy per video (--npy-videos of them) with benchmarks/bench_train_head.py's `NaiveDataset`.
Batch --batch, 8 segments.

  data path  float32 (B, 8, 1280) batches of sampled segment features on the GPU per second:
             ours = `MemoryFeatures` on the GPU (the whole split one float16 tensor there; gather and
             conversion on the GPU) over epochs of plans as the training loop draws them, vs the
             naive DataLoader (--naive-workers processes, pinned memory) + `.to(cuda, non_blocking)`.
             Target: ours >= 50x naive.
  training   per head (mlp, trn_multiscale, lstm) and precision (train-head's default amp, bf16 on
             GPUs that have it; and fp32): the compute limit = forward + backward + SGD step of the
             very model train-head builds, on a batch already on the GPU, vs ours =
             `pipeline.training.loop.train`'s training steps (epochs 2.. of --epochs, the clock
             synchronised at each epoch's first and last step). Target: ours >= 90% of the limit.

Peak GPU memory (torch.cuda.max_memory_allocated) of each. Run on the GPU host:
`python benchmarks/gpu/bench_stage_two.py --out OUT`; `--dry-run` runs every path on the CPU in
seconds (its numbers mean nothing).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]  # these helpers, the CPU benchmarks, the project

import bench_train_head as cpu_bench  # noqa: E402
from common import PeakMemory, device_for, environment, parser, rate, synchronize, table, write_results  # noqa: E402

from pipeline.device import amp_dtype  # noqa: E402
from pipeline.progress import Advanced, Started  # noqa: E402
from pipeline.training.batches import MemoryFeatures, train_plans  # noqa: E402
from pipeline.training.config import TrainHeadConfig  # noqa: E402
from pipeline.training.data import SplitData, StreamData  # noqa: E402
from pipeline.training.loop import TrainData, train  # noqa: E402
from pipeline.training.model import build_model, model_spec  # noqa: E402
from pipeline.training.schedules import OPTIMIZERS  # noqa: E402

DIM, CLASSES, SEGMENTS = cpu_bench.DIM, cpu_bench.CLASSES, cpu_bench.SEGMENTS
HEADS = cpu_bench.HEADS


# ---- data ---------------------------------------------------------------------------------------


def make_split(videos: int, seed: int, name: str, device: torch.device) -> SplitData:
    """A split as `load_split` returns it: one (1, total_frames, DIM) float16 array + offsets, lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(30, 51, videos).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    generator = torch.Generator(device=device).manual_seed(seed)  # drawn on the GPU: seconds less on the host
    frames = torch.randn((1, int(lengths.sum()), DIM), generator=generator, device=device).half().cpu().numpy()
    stream = StreamData(array="rgb", frame_shape=(DIM,), views=1, offsets=offsets, lengths=lengths, frames=frames)
    labels = rng.integers(0, CLASSES, videos).astype(np.int64)
    ids = np.array([f"{name}{i:06d}" for i in range(videos)])
    return SplitData(split=name, video_ids=ids, keys=ids, labels=labels, streams={"rgb": stream}, store_url="memory")


def write_npy(split: SplitData, folder: Path, count: int) -> Path:
    """The naive baseline's files: the first `count` videos, one float16 (view, time, dim) .npy each."""
    folder.mkdir(parents=True, exist_ok=True)
    s = split.streams["rgb"]
    for i in range(count):
        np.save(folder / f"v{i:06d}.npy", s.frames[:, s.offsets[i]: s.offsets[i] + s.lengths[i]])
    np.save(folder / "labels.npy", split.labels[:count])
    return folder


# ---- data path ----------------------------------------------------------------------------------


def data_path(split: SplitData, npy: Path, args, device: torch.device) -> dict:
    out = {}
    with PeakMemory(device) as peak:
        source = MemoryFeatures(split, device=device, num_segments=SEGMENTS, max_batch=args.batch)
        generator = torch.Generator().manual_seed(0)
        plans = [p for _ in range(args.path_epochs) for p in train_plans(len(split), args.batch, SEGMENTS, generator)
                 if len(p.videos) == args.batch]

        def ours():
            for _ in source.iterate(plans):
                pass

        out["ours"] = rate(ours, len(plans) * args.batch, device, repeats=args.repeats)
    out["ours_peak_gib"] = peak.gib
    source = None  # frees its GPU copy of the split

    loader = cpu_bench.naive_loader(npy, args.naive_workers, batch_size=args.batch, pin_memory=device.type == "cuda")
    batches = cpu_bench._cycle(loader)

    def naive():
        for _ in range(args.naive_batches):
            x, y = next(batches)
            x.to(device, non_blocking=True)
            y.to(device, non_blocking=True)

    out["naive"] = rate(naive, args.naive_batches * args.batch, device, repeats=args.repeats)
    batches = loader = None  # stops the loader's worker processes
    out["ratio"] = out["ours"] / out["naive"]
    return out


# ---- training -----------------------------------------------------------------------------------


def config(head: str, amp: bool, args, device: torch.device, epochs: int = 1) -> TrainHeadConfig:
    return TrainHeadConfig(store="bench", head=head, segments=SEGMENTS, batch_size=args.batch, epochs=epochs,
                           device=str(device), amp=amp, recipe="paper").resolved()  # SGD, proj 256: the recorded runs' setting


def compute_limit(head: str, amp: bool, args, device: torch.device) -> dict:
    """Forward + backward + SGD step of train-head's model on one batch already on the device."""
    cfg = config(head, amp, args, device)
    torch.manual_seed(0)
    model = build_model(model_spec(cfg, num_classes=CLASSES, frame_shapes={"rgb": (DIM,)})).to(device)
    model.train()
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    x = {"rgb": torch.randn(args.batch, SEGMENTS, DIM, device=device)}
    y = torch.randint(0, CLASSES, (args.batch,), device=device)
    enabled = amp and device.type == "cuda"

    def steps():
        for _ in range(args.steps):
            with torch.autocast(device_type=device.type, dtype=amp_dtype(device), enabled=enabled):
                per_stream = model.stream_logits(x)
                loss = sum(torch.nn.functional.cross_entropy(o.float(), y) for o in per_stream.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    with PeakMemory(device) as peak:
        fps = rate(steps, args.steps * args.batch, device, repeats=args.repeats)
    return {"samples_per_s": fps, "peak_gib": peak.gib}


def ours(head: str, amp: bool, data: TrainData, args, device: torch.device) -> dict:
    """`loop.train`'s training steps, epochs 2..N (the first warms up), clocks synchronised."""
    cfg = config(head, amp, args, device, epochs=args.epochs)
    clock = {"samples": 0, "seconds": 0.0}

    def progress(event):
        if isinstance(event, Started):
            synchronize(device)
            clock.update(epoch=clock.get("epoch", 0) + 1, left=event.total, start=time.perf_counter(), n=0)
        elif isinstance(event, Advanced):
            clock["left"] -= 1
            clock["n"] += event.amounts["samples"]
            if clock["left"] == 0 and clock["epoch"] > 1:
                synchronize(device)
                clock["seconds"] += time.perf_counter() - clock["start"]
                clock["samples"] += clock["n"]

    with PeakMemory(device) as peak:
        train(cfg, data, progress=progress)
    return {"samples_per_s": clock["samples"] / clock["seconds"], "peak_gib": peak.gib,
            "timed_samples": clock["samples"]}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=10_000, help="training videos held on the GPU")
    p.add_argument("--npy-videos", type=int, default=2_000, help="videos written as .npy for the naive loader")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--naive-workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--naive-batches", type=int, default=20, help="naive batches per timed repeat")
    p.add_argument("--path-epochs", type=int, default=5, help="epochs of plans per timed repeat of our data path")
    p.add_argument("--steps", type=int, default=100, help="steps per timed repeat of the compute limit")
    p.add_argument("--epochs", type=int, default=4, help="train-head epochs (the first is not timed)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=None, help="scratch folder for the .npy files (default: a temporary one)")
    args = p.parse_args()
    if args.dry_run:
        args.videos, args.npy_videos, args.batch, args.naive_workers, args.naive_batches = 48, 48, 8, 1, 2
        args.path_epochs, args.steps, args.epochs, args.repeats = 1, 2, 2, 1
        torch.set_num_threads(1)  # a shared CPU: OpenMP barriers stall when a thread is descheduled
    device = device_for(args)
    started = time.perf_counter()
    env = environment(device)
    work = Path(args.work or tempfile.mkdtemp(prefix="stpipe-gpu-stage-two-"))
    train_split = make_split(args.videos, 0, "train", device)
    val_split = make_split(min(512, args.videos), 1, "val", device)
    npy = write_npy(train_split, work / "npy", min(args.npy_videos, args.videos))
    gib = train_split.nbytes / 2**30
    print(f"stage two on {env.get('gpu', device)}; {env['cpu_cores']} cores, load {env['load_average']:.1f}; "
          f"{args.videos} videos ({gib:.2f} GiB float16), batch {args.batch}, {SEGMENTS} segments, "
          f"amp dtype {amp_dtype(device) if device.type == 'cuda' else 'none (CPU)'}", flush=True)

    path = data_path(train_split, npy, args, device)
    table(f"data path, samples/s (float32 batches on the {device.type}; target ours/naive >= 50)",
          ["ours (MemoryFeatures)", f"naive DataLoader ({args.naive_workers} workers)", "ours/naive", "ours GiB"],
          [[path["ours"], path["naive"], path["ratio"], path["ours_peak_gib"]]])

    data = TrainData(train_split, val_split, [f"c{i}" for i in range(CLASSES)])
    rows = []
    for head in HEADS:
        for amp in (True, False):
            limit = compute_limit(head, amp, args, device)
            loop = ours(head, amp, data, args, device)
            precision = str(amp_dtype(device)).replace("torch.", "") if amp and device.type == "cuda" else "fp32"
            rows.append({"head": head, "precision": precision, "amp": amp, "limit": limit, "ours": loop,
                         "ratio": loop["samples_per_s"] / limit["samples_per_s"]})
            print(f"  {head} {precision}: limit {limit['samples_per_s']:,.0f}, ours {loop['samples_per_s']:,.0f} "
                  "samples/s", flush=True)
    table("training, samples/s (target ours >= 90% of the limit)",
          ["head", "prec", "limit", "ours", "ours/limit", "limit GiB", "ours GiB"],
          [[r["head"], r["precision"], r["limit"]["samples_per_s"], r["ours"]["samples_per_s"], r["ratio"],
            r["limit"]["peak_gib"], r["ours"]["peak_gib"]] for r in rows])
    results = {"environment": env, "dry_run": args.dry_run, "videos": args.videos, "features_gib": gib,
               "batch": args.batch, "segments": SEGMENTS, "naive_workers": args.naive_workers,
               "data_path": path, "training": rows, "seconds": time.perf_counter() - started}
    write_results(args.out, "stage_two", results)
    print(f"total {results['seconds']:.0f} s; load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
