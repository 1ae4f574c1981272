"""Shared helpers of the GPU benchmarks: arguments, device, timing, peak memory, results.

Every script takes `--out DIR` (writes `DIR/<name>.json` and prints a table) and `--dry-run` (tiny
sizes on the CPU, seconds, every code path; its numbers mean nothing). Without `--dry-run` a CUDA
device is required.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default="bench-gpu-out", help="folder for <name>.json (created)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script, not the GPU")
    return p


def device_for(args) -> torch.device:
    if args.dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --dry-run on a CPU-only machine")
    return torch.device("cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], None], items: int, device: torch.device, *, warmup: int = 1, repeats: int = 3) -> float:
    """Items per second of `fn` (which does `items` items), median of `repeats` timed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        rates.append(items / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.gib`: torch.cuda.max_memory_allocated inside."""

    def __init__(self, device: torch.device):
        self.device, self.gib = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30


def environment(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": os.cpu_count(),
            "load_average": os.getloadavg()[0], "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported())
    return info


def table(title: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Print rows under a header, numbers right-aligned with thousands separators."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.0f}"
        return "-" if v is None else str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)), flush=True)


def write_results(out: str | Path, name: str, results: dict) -> Path:
    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nwrote {path}")
    return path


def default_clips() -> Path:
    assets = os.environ.get("STPIPE_ASSETS")
    base = Path(assets) if assets else Path(__file__).resolve().parents[3] / "shared" / "assets"
    return base / "videos"


def find_clips(folder: Path, dry_run: bool, work: Path) -> list[Path]:
    clips = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".mp4", ".avi", ".mkv", ".webm", ".mov"))
    if clips:
        return clips
    if not dry_run:
        raise SystemExit(f"no video clips in {folder}; pass --clips DIR")
    from pipeline.demo_data import DemoDataConfig, generate  # a dry run needs no shared assets

    generate(DemoDataConfig(out=str(work / "demo"), videos_per_class=1, frames=12, size=64))
    return sorted((work / "demo" / "videos").glob("*.mp4"))[:4]
