"""Stage three on the demo data: head-only vs fine-tuned accuracy, training frames/s with 1 and 2 workers.

One run, everything measured here, nothing quoted:
  1. demo videos (time-reversed class pairs, digits from $STPIPE_ASSETS when present); stage one
     with a randomly initialised `tiny` backbone, cached TV-L1 flow and flow-stream features,
  2. stage two: a two-stream (rgb+flow, late fusion) MLP head on the standardised cached features:
     the head-only baseline,
  3. stage three from that run, in-process: val top-1 of its best epoch beside the head-only one,
  4. the data pipeline alone (decode + TSN sampling + corner crops + flow stacks), one process,
  5. training throughput (data + forward + backward + step; evaluation excluded) of the same
     fine-tune in-process (torch's own threads) and on Ray Train with 1 and 2 CPU workers (gloo,
     one thread each, decoding in the worker): the median over epochs 2.. of each run (every epoch
     does the same work), and the median over --repeats runs.
A "frame" is one sampled segment of one video (with its flow stack when there is a motion stream).
The machine is shared, so absolute rates move with its load; read the 2-vs-1 ratio.
Run: `.venv/bin/python benchmarks/bench_finetune.py [--out DIR]` (minutes; DIR keeps the store for reruns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared_assets import default_assets  # noqa: E402

from pipeline.demo_data import DemoDataConfig, generate  # noqa: E402
from pipeline.distributed import ray_session  # noqa: E402
from pipeline.extraction import ExtractConfig  # noqa: E402
from pipeline.finetune.config import FinetuneConfig  # noqa: E402
from pipeline.finetune.data import ClipDataset, Request  # noqa: E402
from pipeline.finetune.model import build_finetune_model  # noqa: E402
from pipeline.finetune.source import prepare  # noqa: E402
from pipeline.training.config import TrainHeadConfig  # noqa: E402
from pipeline.training.model import load_checkpoint  # noqa: E402
from stages import extract, finetune, train_head  # noqa: E402


def throughput(run_dir: Path) -> tuple[float, float]:
    """Median training frames/s and frames per CPU-second over the epochs after the first (the first
    pays start-up costs; every later epoch does the same work)."""
    history = load_checkpoint(run_dir / "last.pt")["state"]["history"]
    measured = history[1:] or history
    return (statistics.median(r["frames_per_second"] for r in measured),
            statistics.median(r["frames_per_cpu_second"] for r in measured))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--flow", default="tvl1-opencv", help="flow method of stage one")
    parser.add_argument("--videos-per-class", type=int, default=16)  # 12 train + 4 val per class
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12, help="fine-tune epochs for the accuracy comparison")
    parser.add_argument("--speed-epochs", type=int, default=4, help="epochs per throughput run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    # AdamW: a random-init backbone's features are tiny (channel stds ~1e-4..1e-2), the head run's
    # standardisation scales their gradients up by 1/std, and SGD at any useful lr diverges
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--backbone-lr-mult", type=float, default=0.3)
    parser.add_argument("--flow-short-side", type=int, default=32)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPU runs: GPUs per Ray Train worker")
    parser.add_argument("--out", default="", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_finetune_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("STPIPE_ASSETS", str(default_assets()))  # the demo glyphs

    started = time.perf_counter()
    demo = generate(DemoDataConfig(out=str(work / "demo"), videos_per_class=args.videos_per_class,
                                   frames=args.frames, size=args.size))
    extract.run(ExtractConfig(manifest=str(demo.manifest), output=str(work / "store.zarr"), backbone=args.backbone,
                              weights="none", executor="local", batch_size=64, flow=True, flow_method=args.flow,
                              flow_short_side=args.flow_short_side, flow_features=True))  # resumes: reruns skip this
    print(f"data: {demo.num_videos} demo videos ({demo.glyphs}), {args.frames} frames at {args.size} px; store with "
          f"{args.backbone} (random init), {args.flow} flow, flow features; {time.perf_counter() - started:.0f} s",
          flush=True)

    head = train_head.run(TrainHeadConfig(store=str(work / "store.zarr"), out=str(work / "head"), head="mlp",
                                          segments=args.segments, modality="rgb+flow", standardize=True, epochs=60,
                                          batch_size=args.batch_size, lr=0.01, overwrite=True,
                                          recipe="paper"))
    base = dict(run=str(work / "head"), manifest=str(demo.manifest), batch_size=args.batch_size, lr=args.lr,
                optimizer=args.optimizer, backbone_lr_mult=args.backbone_lr_mult, loader_workers=0, overwrite=True)
    tuned = finetune.run(FinetuneConfig(out=str(work / "ft"), epochs=args.epochs, **base))
    m = tuned.metrics
    print(f"\naccuracy on val ({m['val_videos']} videos, {args.segments} segments, rgb+flow mlp heads, late fusion):")
    print(f"  head only (stage two on cached features)   top-1 {head.metrics['val_top1']:6.1%}  "
          f"(best of {head.metrics['epochs']} epochs)")
    print(f"  the same network on decoded frames         top-1 {m['start_val_top1']:6.1%}  (stage three, before step 1)")
    print(f"  fine-tuned end to end (stage three)        top-1 {m['val_top1']:6.1%}  "
          f"(best epoch {m['best_epoch']} of {m['epochs']}; {args.optimizer} lr {args.lr}, backbone x{args.backbone_lr_mult})",
          flush=True)

    setup = prepare(FinetuneConfig(out=str(work / "probe"), **base))
    model = build_finetune_model(setup)
    data = ClipDataset(setup, setup.train, preprocessors={s: model.backbones[s].preprocessor for s in setup.streams},
                       train=True)
    passes = []
    for epoch in range(1, 4):
        tick = time.perf_counter()
        for index in range(len(data)):
            data[Request(index, epoch)]
        passes.append(len(data) * setup.segments / (time.perf_counter() - tick))
    print(f"\ndata pipeline alone, one process: {statistics.median(passes):.1f} frames/s "
          f"(median of 3 passes over {len(data)} training videos)", flush=True)

    speed_cfg = dict(base, epochs=args.speed_epochs, schedule="cosine")  # cosine: never stops early
    runs = (("in-process, 1 worker", "local1", {"executor": "local"}),
            ("Ray Train, 1 worker", "ray1", {"executor": "ray", "workers": 1, "gpus_per_worker": args.gpus_per_worker}),
            ("Ray Train, 2 workers", "ray2", {"executor": "ray", "workers": 2, "gpus_per_worker": args.gpus_per_worker}))
    wall: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    with ray_session(""):
        for repeat in range(args.repeats):
            for label, slug, extra in runs:
                out = work / f"speed-{slug}-{repeat}"
                finetune.run(FinetuneConfig(out=str(out), **speed_cfg, **extra))
                rate, per_cpu = throughput(out)
                wall[label].append(rate)
                cpu[label].append(per_cpu)
                print(f"  {label:22s} repeat {repeat + 1}: {rate:7.1f} frames/s, {per_cpu:7.1f} frames per CPU-s",
                      flush=True)
    print(f"\ntraining throughput ({args.backbone}, rgb+flow, {args.segments} segments, global batch {args.batch_size}, "
          f"median of {args.repeats} repeat(s) x epochs 2..{args.speed_epochs}):")
    print(f"  {'':22s} {'frames/s':>9s} {'frames/CPU-s':>13s}")
    for label, _, _ in runs:
        print(f"  {label:22s} {statistics.median(wall[label]):9.1f} {statistics.median(cpu[label]):13.1f}")
    one, two = (statistics.median(wall[k]) for k in ("Ray Train, 1 worker", "Ray Train, 2 workers"))
    one_cpu, two_cpu = (statistics.median(cpu[k]) for k in ("Ray Train, 1 worker", "Ray Train, 2 workers"))
    print(f"  2 workers / 1 worker (Ray): {two / one:.2f}x wall clock, {two_cpu / one_cpu:.2f}x per CPU-second")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; cores on this machine: {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
