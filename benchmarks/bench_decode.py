"""Stage one's decode path (issue 19), measured in one run and printed side by side.

Sections (`--sections`, default all three):

  percore  one core (this process and its decoder pinned to CPU 0): frames/s of bare PyAV decode of
           the shared clips at native size (frame -> rgb24 array, FFmpeg on one thread) vs our decode
           path through a decoder process (probe, decode, selection, resize in the scaler, view crops
           into the shared-memory ring, copied out by the consumer) at mobilenet_v2's 256/224.
           Target >= 0.8.
  e2e      all cores: the all-core decode rate (decoder processes, one per core, drained by a consumer
           that only copies) vs `Extractor.process` with a null backbone (global average pooling of
           the normalised crops: no convolution) - decoding in processes with the compute threads
           measured (the default, pipeline/extraction/threads.py) and fixed at all cores (before
           it), and in threads. Timed once the decoders are up (the first video starts them and is
           not timed); the governor's trials are timed (use enough --clip-repeats for a steady state).
           Target >= 0.85 with processes.
  before   mobilenet_v2 (ImageNet weights when cached) end to end on the CPU and peak memory on one
           long synthetic 640x480 video: this tree vs the tree before issue 19 (`git archive BASE`),
           each as a `cli.py extract` subprocess, alternated. Memory = the process tree's peak PSS
           sum (decoder processes included; the shared ring counted once) and the compute process's
           own VmHWM.

Run: `TORCH_HOME=<cache with mobilenet_v2-b0353104.pth> .venv/bin/python benchmarks/bench_decode.py`
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import pipeline  # noqa: E402,F401 - first, as in the CLI: its OpenMP setting must precede torch's import

# isort: split
from bench_extract import CLIPS, pick_weights, synthetic_video, write_manifest  # noqa: E402
from shared_assets import default_assets  # noqa: E402


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def bare_decode(videos: list[Path]) -> int:
    import av

    frames = 0
    for video in videos:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            try:
                for frame in container.decode(stream):
                    frame.to_ndarray(format="rgb24")
                    frames += 1
            except av.error.FFmpegError:  # tree.avi's broken tail: both paths stop there
                pass
    return frames


class Job:
    def __init__(self, path):
        self.path, self.start, self.end, self.video_id = str(path), None, None, str(path)


def pool_decode(videos: list[Path], processes: int) -> float:
    """Frames/s through `processes` decoder processes, the consumer only copying chunks out (timed
    from when the processes are up: start-up is paid once per worker, not per video)."""
    from pipeline.decoding.core import DecodeSpec, Ended, Failed, Frames
    from pipeline.decoding.pool import ProcessDecoders

    spec = DecodeSpec(resize=(256,), crop=224, views="center")
    pool = ProcessDecoders(spec, processes)
    try:
        pool.submit(Job(videos[0]))  # wait until every decoder has started (imports done)
        while not any(isinstance(r, (Ended, Failed)) for _, r in pool.poll(0.05)):
            pass
        time.sleep(0.5)
        start = time.perf_counter()
        for video in videos:
            pool.submit(Job(video))
        left, frames = len(videos), 0
        while left:
            for _, record in pool.poll(0.05):
                if isinstance(record, Frames):
                    frames += len(record.indices)
                elif isinstance(record, (Ended, Failed)):
                    left -= 1
        return frames / (time.perf_counter() - start)
    finally:
        pool.close()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    frames = fn(*args)
    return frames / (time.perf_counter() - start)


def percore(args, videos):
    print(f"\n== percore: one core (CPU 0), {len(videos)} videos; {args.repeats} repeats, median ==")
    os.sched_setaffinity(0, {0})
    try:
        pool_decode(videos[:1], 1)  # warm the page cache and the interpreter's imports
        bare, ours = [], []
        for _ in range(args.repeats):
            bare.append(timed(bare_decode, videos))
            ours.append(pool_decode(videos, 1))
            print(f"  bare PyAV {bare[-1]:7.1f} fr/s   ours {ours[-1]:7.1f} fr/s   ratio {ours[-1] / bare[-1]:.2f}"
                  f"   load {load()}", flush=True)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count())))
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"median: bare {b:.1f} fr/s, ours {o:.1f} fr/s, ratio {o / b:.2f} (target 0.8)")


def null_backbone():
    import torch

    from pipeline.backbones import build_backbone

    backbone = build_backbone("mobilenet_v2", weights="none", device="cpu")
    backbone.forward_features = lambda x: x.float().mean(dim=(2, 3))  # pooling only
    return backbone, torch.device("cpu")


def extract_null(manifest: Path, out: Path, kind: str, workers: int, threads: int = 0) -> tuple[float, list[str]]:
    from pipeline.extraction import ExtractConfig, Extractor
    from pipeline.extraction.models import Models
    from pipeline.progress import Note
    from stages import extract

    backbone, device = null_backbone()
    cfg = ExtractConfig(manifest=str(manifest), output=str(out), backbone="mobilenet_v2", weights="none",
                        executor="local", overwrite=True, device="cpu",
                        decode_procs=workers if kind == "processes" else 0, decode_threads=workers,
                        compute_threads=threads)
    work = extract.plan(cfg, Models(device, backbone, None, None))
    notes = []
    extractor = Extractor(cfg, work.store, device=device, backbone=backbone,
                          cores=None if kind == "processes" else 1,
                          progress=lambda event: isinstance(event, Note) and notes.append(event.message))
    try:
        # the first video starts the decoders (processes import PyAV and numpy: ~0.3 s, paid once per
        # worker, as in pool_decode); the rest is timed
        extractor.process(work.jobs[:1])
        stats = extractor.process(work.jobs[1:])
    finally:
        extractor.close()
    assert not stats.failed, stats.failures
    return stats.frames / stats.seconds, notes


def e2e(args, videos, work: Path):
    import torch

    cores = os.cpu_count()
    manifest = write_manifest(work / "e2e.csv", videos)
    print(f"\n== e2e: {len(videos)} videos, {cores} cores, null backbone; {args.repeats} repeats, median ==")
    rows = {"limit": [], "measured": [], "fixed": [], "threads": []}
    for _ in range(args.repeats):
        rows["limit"].append(pool_decode(videos, cores))
        torch.set_num_threads(cores)
        p, notes_p = extract_null(manifest, work / "p.zarr", "processes", cores)
        rows["measured"].append(p)
        f, _ = extract_null(manifest, work / "f.zarr", "processes", cores, threads=cores)
        rows["fixed"].append(f)
        torch.set_num_threads(cores)
        t, notes_t = extract_null(manifest, work / "t.zarr", "threads", 2)
        rows["threads"].append(t)
        m = rows["limit"][-1]
        chosen = [n for n in notes_p if n.startswith("compute threads")]
        print(f"  all-core decode {m:7.1f} fr/s   processes, threads measured {p:7.1f} ({p / m:.2f})   "
              f"processes, {cores} threads {f:7.1f} ({f / m:.2f})   threads {t:7.1f} ({t / m:.2f})   load {load()}"
              f"   [{'; '.join(chosen) or 'compute threads: kept ' + str(cores)}]", flush=True)
    print(f"  [{notes_p[0]}] [{notes_t[0]}]")
    m = statistics.median(rows["limit"])
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"median: all-core decode {m:.1f} fr/s; e2e processes, threads measured {med['measured']:.1f} "
          f"({med['measured'] / m:.2f}, target 0.85); processes, {cores} threads {med['fixed']:.1f} "
          f"({med['fixed'] / m:.2f}); threads {med['threads']:.1f} ({med['threads'] / m:.2f})")


def tree_memory(pid: int) -> float:
    """PSS (MiB) of `pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1))
        except (OSError, AttributeError):
            continue
    return total / 1024


def run_cli(tree: Path, argv: list[str], log: Path) -> tuple[float, float, float]:
    """(frames/s reported, peak tree PSS MiB, compute process VmHWM MiB)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(tree / "cli.py"), *argv], cwd=tree, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        peak = hwm = 0.0
        while proc.poll() is None:
            peak = max(peak, tree_memory(proc.pid))
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
                hwm = max(hwm, int(text.split("VmHWM:")[1].split()[0]) / 1024)
            except (OSError, IndexError):
                pass
            time.sleep(0.2)
    text = log.read_text()
    if proc.returncode:
        raise SystemExit(f"{tree}: extract failed ({proc.returncode}); see {log}")
    rate = float(re.search(r"\(([\d.]+) frames/s\)", text).group(1))
    return rate, peak, hwm


def before_after(args, videos, work: Path):
    base = work / "before"
    if not base.exists():
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.base], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
    weights = pick_weights("auto")
    manifest = write_manifest(work / "mb.csv", videos)
    long_video = synthetic_video(work / f"long-{args.long_frames}.avi", args.long_frames)
    long_manifest = write_manifest(work / "long.csv", [long_video])
    common = ["--backbone", "mobilenet_v2", "--weights", weights, "--executor", "local", "--device", "cpu",
              "--overwrite"]
    print(f"\n== before: mobilenet_v2 ({weights}) on CPU, this tree vs {args.base}; {args.repeats} repeats ==")
    for name, man, reps in (("clips", manifest, args.repeats), (f"long {args.long_frames}", long_manifest, 1)):
        rows = {"before": [], "after": []}
        for rep in range(reps):
            for label, tree in (("before", base), ("after", REPO)):
                argv = ["extract", "-m", str(man), "-o", str(work / f"{label}.zarr"), *common]
                rate, peak, hwm = run_cli(tree, argv, work / f"{label}-{rep}.log")
                rows[label].append(rate)
                print(f"  {name:>12} {label:>6} {rate:7.1f} fr/s   peak PSS (tree) {peak:6.0f} MiB   "
                      f"compute VmHWM {hwm:6.0f} MiB   load {load()}", flush=True)
        b, a = statistics.median(rows["before"]), statistics.median(rows["after"])
        print(f"  {name}: after/before {a / b:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="percore,e2e,before")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip-repeats", type=int, default=3, help="each shared clip this many times")
    parser.add_argument("--long-frames", type=int, default=10_000)
    parser.add_argument("--base", default="f7105b0", help="the commit before issue 19")
    parser.add_argument("--work", default="")
    parser.add_argument("--dry-run", action="store_true", help="percore and e2e, once, each clip once")
    args = parser.parse_args()
    if args.dry_run:
        args.sections, args.repeats, args.clip_repeats = "percore,e2e", 1, 1
    assets = default_assets()
    videos = [assets / "videos" / c for c in CLIPS] * args.clip_repeats
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-decode-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"cores {os.cpu_count()}, load {load()}, work {work}")
    sections = args.sections.split(",")
    if "percore" in sections:
        percore(args, videos)
    if "e2e" in sections:
        e2e(args, videos, work)
    if "before" in sections:
        before_after(args, videos, work)


if __name__ == "__main__":
    main()
