"""A ViT-B/16-class backbone (timm and OpenCLIP) against mobilenet_v2 on this machine: MACs,
forward frames/s on preprocessed batches, and `stpipe extract` end to end on the asset clips.

The ViTs are randomly initialised (`--weights none`): speed does not depend on the weights, and no
weights are downloaded. mobilenet_v2 uses the assets' ImageNet file when present.

Run: `.venv/bin/python benchmarks/bench_backbone_families.py [--frames 24] [--batches 3] [--device cuda]`
Prints one table; quote `cat /proc/loadavg` beside it (printed at start and end).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_backbones import forward_limit  # noqa: E402
from benchmarks.shared_assets import default_assets  # noqa: E402
from pipeline.backbones import build_backbone  # noqa: E402
from pipeline.backbones.describe import describe_backbone  # noqa: E402
from pipeline.extraction import ExtractConfig  # noqa: E402
from stages import extract  # noqa: E402

BACKBONES = ("mobilenet_v2", "timm:vit_base_patch16_clip_224.openai", "open_clip:ViT-B-16/openai")


def _manifest(assets: Path, folder: Path) -> Path:
    path = folder / "assets.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "path", "label", "split"])
        for video in sorted((assets / "videos").iterdir()):
            writer.writerow([video.stem, str(video), "clip", "train"])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per asset clip end to end (max_frames)")
    parser.add_argument("--batches", type=int, default=3, help="timed forward batches (median)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (forward and extract)")
    args = parser.parse_args()
    assets = default_assets()
    weights_file = assets / "weights" / "mobilenet_v2-b0353104.pth"
    print(f"loadavg at start: {open('/proc/loadavg').read().strip()}; torch threads {torch.get_num_threads()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _manifest(assets, Path(tmp))
        for name in BACKBONES:
            weights = str(weights_file) if name == "mobilenet_v2" and weights_file.is_file() else "none"
            card = describe_backbone(name)
            backbone = build_backbone(name, weights=weights, device=args.device)
            forward = forward_limit(backbone, args.batch, args.batches, warmup=1)
            del backbone
            cfg = ExtractConfig(manifest=str(manifest), output=str(Path(tmp) / f"{len(rows)}.zarr"), backbone=name,
                                weights=weights, executor="local", max_frames=args.frames, batch_size=args.batch,
                                device=args.device)
            start = time.perf_counter()
            result = extract.run(cfg)
            wall = time.perf_counter() - start
            rows.append((name, weights if weights == "none" else "ImageNet file", card.macs / 1e9, card.params / 1e6,
                         forward, result.frames / wall, result.frames, wall))
    print(f"{'backbone':<40} {'weights':<14} {'GMACs/frame':>11} {'M params':>8} {'forward f/s':>11} "
          f"{'extract f/s':>11} {'frames':>6} {'extract s':>9}")
    for name, weights, macs, params, forward, e2e, frames, wall in rows:
        print(f"{name:<40} {weights:<14} {macs:>11.2f} {params:>8.1f} {forward:>11.1f} {e2e:>11.1f} {frames:>6} {wall:>9.1f}")
    base = rows[0]
    for row in rows[1:]:
        print(f"{row[0]}: {row[2] / base[2]:.0f}x the MACs of {base[0]}, forward {base[4] / row[4]:.1f}x slower, "
              f"extract end to end {base[5] / row[5]:.1f}x slower")
    print(f"loadavg at end: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
