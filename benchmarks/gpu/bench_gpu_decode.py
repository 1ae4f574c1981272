"""nvJPEG and NVDEC frames/s beside CPU decoding on all cores, on the same inputs (issue 19).

Inputs: the clips (--clips, default $STPIPE_ASSETS/videos) as video files, and each clip's first
--folder-frames frames written as a JPEG frame folder (quality 90, as Jester ships), made here before
any timing. Every input is decoded as `--copies` jobs at once (default: one per core, so every CPU
decoder process is busy) through the extractor's own decode pools, into what the backbone gets
(resize 256, centre crop 224, uint8 crops):

  cpu      `ProcessDecoders`: one decoder process per core (all of the host's), crops copied out of
           the shared-memory ring into this process (host memory; the upload is not counted)
  nvjpeg   `GpuDecoders`, JPEG folders: bytes read on the host, `decode_jpeg(list, device="cuda")`,
           resize and crop on the GPU (the crops stay there), --gpu-threads decoding threads
  nvdec    `GpuDecoders`, video files through PyNvVideoCodec (skipped, with the reason, where it does
           not import); a clip NVDEC cannot decode falls back to the CPU and its row says so

frames/s = crops delivered / wall seconds, median of --repeats passes after one warm-up pass; GPU
passes end with a device synchronize. mean/max |d|: how far one job's GPU crops are from the CPU's,
in uint8 levels (nvJPEG's IDCT vs libjpeg-turbo's; NVDEC's colour conversion and the device resize
vs FFmpeg's scaler). Only needs torch, torchvision, PyAV and PIL (no zarr or Ray):
`benchmarks/gpu/run.sh --parts gpudecode`. `--dry-run`: the device path on the CPU device
(decode_jpeg on the CPU; NVDEC skipped), tiny inputs, seconds; checks the script, its numbers mean nothing.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # these helpers, the project

from common import (  # noqa: E402
    default_clips,
    device_for,
    environment,
    find_clips,
    parser,
    synchronize,
    table,
    write_results,
)

from pipeline.decoding.core import DecodeSpec, Ended, Failed, Frames, default_processes  # noqa: E402
from pipeline.progress import Note  # noqa: E402
from pipeline.video import FrameSelection  # noqa: E402


@dataclass
class Job:
    path: str
    start: float | None = None
    end: float | None = None


def make_folders(clips: list[Path], frames: int, out: Path) -> list[Path]:
    """Each clip's first `frames` frames as a JPEG folder (PIL, quality 90)."""
    from PIL import Image

    from pipeline.video import read_frames

    folders = []
    for clip in clips:
        folder = out / f"{clip.stem}_jpg"
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(read_frames(clip, select=FrameSelection(max_frames=frames))):
            Image.fromarray(frame).save(folder / f"{i + 1:05d}.jpg", quality=90)
        folders.append(folder)
    return folders


def one_pass(pool, path: Path, copies: int, device: torch.device) -> tuple[int, float, list[str]]:
    """(crops delivered, wall seconds, failures) of `copies` jobs of `path` through `pool`."""
    start = time.perf_counter()
    for _ in range(copies):
        pool.submit(Job(str(path)))
    remaining, frames, failures = copies, 0, []
    while remaining:
        for _, record in pool.poll(0.05):
            if isinstance(record, Frames):
                frames += len(record.indices)
            elif isinstance(record, Ended):
                remaining -= 1
            elif isinstance(record, Failed):
                remaining -= 1
                failures.append(record.error)
    synchronize(device)
    return frames, time.perf_counter() - start, failures


def crops_of(pool, path: Path) -> np.ndarray:
    """One job's crops, (V, n, 3, c, c) uint8 on the host, in frame order."""
    pool.submit(Job(str(path)))
    parts = []
    while True:
        for _, record in pool.poll(0.05):
            if isinstance(record, Frames):
                crops = record.crops
                parts.append(crops.cpu().numpy() if isinstance(crops, torch.Tensor) else crops)
            elif isinstance(record, (Ended, Failed)):
                return np.concatenate(parts, axis=1) if parts else np.zeros((1, 0, 3, 1, 1), np.uint8)


def difference(got: np.ndarray, want: np.ndarray) -> dict:
    """How far the GPU path's crops are from the CPU's, in uint8 levels."""
    if got.shape != want.shape:
        return {"mean": None, "p99": None, "max": None, "shape": [list(got.shape), list(want.shape)]}
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    return {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": int(d.max())}


def measure(pool, path: Path, copies: int, repeats: int, device: torch.device) -> dict:
    one_pass(pool, path, copies, device)  # warm-up: codec and NVDEC sessions, nvJPEG handles, caches
    runs = [one_pass(pool, path, copies, device) for _ in range(repeats)]
    fps = statistics.median(frames / seconds for frames, seconds, _ in runs)
    failures = sorted({error for *_, errors in runs for error in errors})
    return {"fps": fps, "frames": runs[0][0], "failures": failures}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=Path, default=default_clips())
    p.add_argument("--folder-frames", type=int, default=120, help="frames of each clip written as a JPEG folder")
    p.add_argument("--max-frames", type=int, default=300, help="frames decoded per video file")
    p.add_argument("--copies", type=int, default=0, help="jobs of each input at once (0 = one per core, >= 4)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--procs", type=int, default=0, help="CPU decoder processes (0 = all cores)")
    p.add_argument("--gpu-threads", default="2,4", help="GpuDecoders threads to try, comma-separated")
    args = p.parse_args()
    device = device_for(args)
    cores = args.procs or default_processes()
    if args.dry_run:
        args.folder_frames, args.max_frames, args.repeats, args.gpu_threads = 8, 8, 1, "2"
    copies = args.copies or (2 if args.dry_run else max(4, cores))
    threads = [int(t) for t in args.gpu_threads.split(",") if t]
    spec = DecodeSpec(resize=(256,), crop=224, views="center", select=FrameSelection(max_frames=args.max_frames))

    from pipeline.decoding.gpu import GpuDecoders, NvdecSource, jpeg_works, nvdec_missing
    from pipeline.decoding.pool import ProcessDecoders

    jpeg_trouble = jpeg_works(device)
    nvdec_trouble = "the device is the CPU (dry run)" if device.type != "cuda" else nvdec_missing()
    with tempfile.TemporaryDirectory(prefix="stpipe-gpudec-") as tmp:
        clips = find_clips(args.clips, args.dry_run, Path(tmp))
        folders = make_folders(clips, args.folder_frames, Path(tmp) / "jpeg")
        notes: list[str] = []
        cpu = ProcessDecoders(spec, cores)
        try:
            gpu_pools = {t: GpuDecoders(spec, device, video=None if nvdec_trouble else NvdecSource(device),
                                        jpeg=jpeg_trouble is None, cpu=lambda: ProcessDecoders(spec, cores),
                                        threads=t, progress=lambda e: isinstance(e, Note) and notes.append(e.message))
                         for t in threads}
            rows, results = [], []
            for kind, inputs, trouble in (("jpeg", folders, jpeg_trouble), ("video", clips, nvdec_trouble)):
                for path in inputs:
                    row = {"input": path.name, "kind": kind, "cpu": measure(cpu, path, copies, args.repeats, device)}
                    before = len(notes)
                    for t, pool in gpu_pools.items():
                        row[f"gpu_{t}"] = None if trouble else measure(pool, path, copies, args.repeats, device)
                    row["fallback"] = sorted(set(notes[before:]))
                    row["levels"] = None if trouble else difference(crops_of(gpu_pools[threads[0]], path),
                                                                     crops_of(cpu, path))
                    results.append(row)
                    gpu_fps = [row[f"gpu_{t}"]["fps"] if row[f"gpu_{t}"] else None for t in threads]
                    best = max((f for f in gpu_fps if f), default=None)
                    levels = row["levels"] or {}
                    why = trouble or ("fell back to the CPU (notes below)" if row["fallback"] else "")
                    rows.append([path.name, "nvJPEG" if kind == "jpeg" else "NVDEC", row["cpu"]["frames"],
                                 row["cpu"]["fps"], *gpu_fps, best / row["cpu"]["fps"] if best else None,
                                 levels.get("mean"), levels.get("max"), why])
        finally:
            cpu.close()
            for pool in locals().get("gpu_pools", {}).values():
                pool.close()
    env = environment(device)
    table(f"decode to 224x224 crops, frames/s ({copies} jobs of each input at once; load {os.getloadavg()[0]:.2f})",
          ["input", "gpu path", "frames/pass", f"cpu {cores} procs", *[f"gpu {t} thr" for t in threads],
           "gpu/cpu", "mean |d|", "max |d|", "note"], rows)
    for line in sorted(set(notes)):
        print(f"note: {line}")
    write_results(args.out, "gpu_decode", {"environment": env, "copies": copies, "cpu_processes": cores,
                                           "gpu_threads": threads, "rows": results})


if __name__ == "__main__":
    main()
