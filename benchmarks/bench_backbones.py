"""The backbone's pure forward speed on pre-decoded tensors: the limit stage one is measured against.

`forward_limit(backbone, batch, n_batches)` times `forward_features` on an already preprocessed
batch that sits on the backbone's device (no decoding, resizing or writing) and returns frames/s
from the median batch time. The stage-one benchmark imports it and prints its end-to-end rate
beside this one.

Run: `.venv/bin/python benchmarks/bench_backbones.py [--batches 5] [--device auto]`. Prints, for
mobilenet_v2 pooled and spatial at batch 32 and 64, frames/s in the default memory format and in
channels_last, and the batched preprocessing rate (uint8 frames -> normalised 224 crops) at two
video sizes, so one can see that preprocessing is cheap next to the forward it feeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.backbones import Backbone, build_backbone  # noqa: E402


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_seconds(fn, n_batches: int, *, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(n_batches):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def forward_limit(backbone: Backbone, batch: int, n_batches: int, *, warmup: int = 2) -> float:
    """Frames/s of `backbone.forward_features` alone on a preprocessed batch (median batch time).

    Video backbones count the frames a clip advances (`clip_stride`) per clip, i.e. the rate at
    which a video's frames are consumed by overlapping windows.
    """
    meta, device = backbone.meta, backbone.device
    crop = meta["input_size"]
    if meta["kind"] == "video":
        shape = (batch, meta["in_channels"], meta["clip_window"], *crop)
        frames_per_item = meta["clip_stride"]
    else:
        shape, frames_per_item = (batch, meta["in_channels"], *crop), 1
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(device)
    times = batch_seconds(lambda: backbone.forward_features(x), n_batches, warmup=warmup, device=device)
    return batch * frames_per_item / statistics.median(times)


def preprocess_rate(backbone: Backbone, height: int, width: int, batch: int, n_batches: int) -> float:
    """Frames/s of `backbone.preprocess` on decoded uint8 frames (N, H, W, 3)."""
    frames = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8).to(backbone.device)
    times = batch_seconds(lambda: backbone.preprocess(frames), n_batches, warmup=1, device=backbone.device)
    return batch / statistics.median(times)


def _input(backbone: Backbone, batch: int) -> torch.Tensor:
    shape = (batch, backbone.meta["in_channels"], *backbone.meta["input_size"])
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(backbone.device)


def compare_memory_formats(
    plain: Backbone, nhwc: Backbone, batch: int, n_batches: int
) -> tuple[float, float]:
    """Frames/s of the two formats, batches interleaved so a busy machine slows both alike."""
    x, device = _input(plain, batch), plain.device
    for backbone in (plain, nhwc, plain, nhwc):  # warm-up
        backbone.forward_features(x)
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(n_batches):
        for i, backbone in enumerate((plain, nhwc)):
            times[i] += batch_seconds(lambda b=backbone: b.forward_features(x), 1, warmup=0, device=device)
    return batch / statistics.median(times[0]), batch / statistics.median(times[1])


MALLOC_PROBE = """
import resource, sys, threading
sys.path[:0] = [{root!r}, {root!r} + "/benchmarks"]
from bench_backbones import forward_limit
from pipeline.backbones import build_backbone
backbone = build_backbone({name!r}, weights="none")
out = {{}}
def work():  # in a worker thread, as the extraction executor runs it
    before = resource.getrusage(resource.RUSAGE_SELF)
    out["fps"] = forward_limit(backbone, 32, {n})
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["faults"], out["sys"] = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
thread = threading.Thread(target=work); thread.start(); thread.join()
print(out["fps"], out["faults"], out["sys"])
"""


def malloc_comparison(name: str, n_batches: int) -> None:
    """The glibc tuning of pipeline/backbones/allocator.py on and off, each in a fresh process."""
    print(f"glibc malloc tuning, {name} batch 32 in a worker thread (fresh process each, alternating):")
    print(f"{'tuning':>7} {'frames/s':>9} {'minor faults':>13} {'system s':>9}")
    code = MALLOC_PROBE.format(root=str(Path(__file__).resolve().parent.parent), name=name, n=n_batches)
    for setting in ("0", "1", "0", "1"):
        env = {**os.environ, "STPIPE_MALLOC_TUNING": setting}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        fps, faults, system = result.stdout.split()
        print(
            f"{'on' if setting == '1' else 'off':>7} {float(fps):>9.1f} {int(faults):>13} {float(system):>9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5, help="timed batches per setting (median)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--malloc", action="store_true", help="also compare the glibc malloc tuning on/off")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"device {args.device}, load average {load:.1f} at start")  # fmt: skip
    print(f"{args.backbone} pure forward_features, median of {args.batches} batches (random init: weights do "
          "not change the speed)")  # fmt: skip
    print(f"{'features':>9} {'batch':>6} {'default fr/s':>13} {'channels_last fr/s':>19} {'ratio':>6}")
    for features in ("pooled", "spatial"):
        plain = build_backbone(args.backbone, weights="none", features=features, device=args.device,
                               channels_last=False)  # fmt: skip
        nhwc = build_backbone(args.backbone, weights="none", features=features, device=args.device,
                              channels_last=True)  # fmt: skip
        for batch in (32, 64):
            a, b = compare_memory_formats(plain, nhwc, batch, args.batches)
            print(f"{features:>9} {batch:>6} {a:>13.1f} {b:>19.1f} {b / a:>6.2f}")
    backbone = build_backbone(args.backbone, weights="none", device=args.device)
    limit = forward_limit(backbone, 64, args.batches)
    print(f"forward_limit(default build, batch 64) = {limit:.1f} frames/s "
          f"(channels_last={backbone.channels_last})")  # fmt: skip

    print(f"preprocess (uint8 -> resize {backbone.meta['resize_size']} -> crop {backbone.meta['input_size']}"
          " -> normalise), batch 64")  # fmt: skip
    for height, width in ((240, 320), (576, 768)):
        rate = preprocess_rate(backbone, height, width, 64, args.batches)
        print(f"  {height}x{width}: {rate:.1f} frames/s")
    if args.malloc:
        malloc_comparison(args.backbone, args.batches)
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
