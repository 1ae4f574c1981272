"""The store at dataset scale: per-video costs of write, resume, index, inspect and stage-two load,
today's code beside a baseline checkout, extrapolated to 220k (SSv2) and 650k (Kinetics-700) videos.

Builds (with this checkout's writer, the fastest) an N-video store per size: pooled features,
--frames frames of --dim float16 per video, 80/10/10 train/val/test, 174 classes. Every measurement
runs in a fresh subprocess with either this checkout or --baseline (a checkout of the code to compare
with, e.g. `git worktree add ../base main`) first on sys.path, so both read the same store and each
reports its own peak RSS. Measured per code:

- write: `FeatureStore.begin_video` + `VideoWriter.write` + `finish` (what import and extract call)
  into a fresh store (the baseline on at most --baseline-write-videos videos: it is slow);
- resume: `complete_ids()` on the N-video store (what a re-run of extract/import does first);
- index: `write_index()` when nothing changed;
- inspect: `summarize(store)`;
- load: `load_split` of train and val, pooled (what train-head/ablate/evaluate read);
- S3 (moto server on loopback, --s3-videos videos): write requests per video, and the load's
  requests and time for both codes, counted from the server's access log;
- train-head samples/s of an mlp head on the first size's store, as found and with one busy-loop
  process per usable CPU running beside it (the threads each code picks on its own).

Run: `.venv/bin/python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--frames 10]
[--baseline ../i24-base] [--work /tmp/stpipe-bench-scale] [--s3-videos 1000] [--keep]`.
Stores are deleted at the end unless --keep (100k videos of 10x1280 are ~2.6 GB, plus the pack).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CLASSES = 174
TARGETS = (220_000, 650_000)


# ---- child side: one measurement with one code --------------------------------------------------


def has(code: str, module: str) -> bool:
    """Whether that checkout has pipeline/<module>.py (an installed checkout's modules must not stand in)."""
    return Path(code, "pipeline", f"{module}.py").is_file()


def child(args) -> dict:
    sys.path.insert(0, args.code)
    import resource

    import numpy as np

    import pipeline
    from pipeline.store import FeatureStore

    assert Path(pipeline.__file__).resolve().is_relative_to(Path(args.code).resolve()), pipeline.__file__
    import zarr  # noqa: F401 - imported before the clock starts (~1-2 s under load)

    from pipeline.store import summarize
    from pipeline.training.data import load_split

    opts = json.loads(args.storage_options) if args.storage_options else None
    out: dict = {}
    t = time.perf_counter()  # imports done: only the operation is timed
    cpu = time.process_time()
    if args.op == "write":
        store = FeatureStore.create(args.store, storage_options=opts, overwrite=True, provenance={
            "config_hash": "bench", "classes": [f"c{i}" for i in range(CLASSES)], "config": {}})
        rng = np.random.default_rng(0)
        block = rng.standard_normal((64, args.frames, args.dim)).astype(np.float16)
        WritePool = None
        if has(args.code, "store_writes"):  # this checkout: several videos in flight on object stores, as import does
            from pipeline.store_writes import WritePool, write_threads
        t = time.perf_counter()
        store.complete_ids()  # as import and extract do first (the resume scan of an empty store)

        def write(i: int) -> None:
            split = ("train",) * 8 + ("val", "test")
            attrs = {"path": f"videos/{i:07d}.mp4", "label": f"c{i % CLASSES}", "label_index": i % CLASSES,
                     "split": split[i % 10], "start": None, "end": None, "fps": 12.0}
            writer = store.begin_video(f"video{i:07d}", attrs)
            writer.write("rgb", block[i % 64][None], dims=("view", "time", "channel"), time_axis=1)
            writer.finish(num_frames=args.frames, frame_index=list(range(args.frames)))

        if WritePool is None:
            for i in range(args.n):
                write(i)
        else:
            with WritePool(write_threads(store)) as pool:
                for i in range(args.n):
                    pool.submit(write, i)
        out["seconds"] = time.perf_counter() - t
        if args.finalize:
            t = time.perf_counter()
            store.write_index()
            out["index_seconds"] = time.perf_counter() - t
            if has(args.code, "store_pack"):
                from pipeline.store_pack import write_pack

                t = time.perf_counter()
                write_pack(store)
                out["pack_seconds"] = time.perf_counter() - t
    elif args.op == "resume":
        store = FeatureStore.open(args.store, mode="r+", storage_options=opts)
        t = time.perf_counter()
        out["videos"] = len(store.complete_ids())
        out["seconds"] = time.perf_counter() - t
    elif args.op == "index":
        store = FeatureStore.open(args.store, mode="r+", storage_options=opts)
        t = time.perf_counter()
        out["videos"] = len(store.write_index()["video_id"])
        out["seconds"] = time.perf_counter() - t
    elif args.op == "inspect":
        store = FeatureStore.open(args.store, storage_options=opts)
        out["videos"] = summarize(store)["complete"]
        out["seconds"] = time.perf_counter() - t
    elif args.op == "load":
        store = FeatureStore.open(args.store, storage_options=opts)
        videos = 0
        for split in ("train", "val"):
            videos += len(load_split(store, split, streams=("rgb",), pooled=True, storage_options=opts))
        out["videos"] = videos
        out["seconds"] = time.perf_counter() - t
    elif args.op == "train":
        from pipeline.training.config import TrainHeadConfig
        from stages import train_head

        cfg = TrainHeadConfig(store=args.store, out=args.out, head="mlp", segments=8, epochs=2, batch_size=256,
                              device="cpu", seed=0)
        result = train_head.run(cfg)
        import torch

        out["samples_per_second"] = result.metrics["samples_per_second"]
        out["threads"] = torch.get_num_threads()
    out["cpu_seconds"] = time.process_time() - cpu  # all threads; on a shared machine the steadier figure
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ---- driver side ------------------------------------------------------------------------------


def run_child(code: str, op: str, store: str, **extra) -> dict:
    argv = [sys.executable, __file__, "--child", op, "--code", code, "--store", store]
    for name, value in extra.items():
        if value is True:
            argv.append(f"--{name.replace('_', '-')}")
        elif value not in (None, False):
            argv += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": code}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=code)
    if proc.returncode != 0:
        raise SystemExit(f"{op} with {code} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def line(label: str, new: dict | None, base: dict | None, n: int, *, unit: str = "ms/video") -> str:
    def cell(r):
        if r is None:
            return "-"
        per = r["seconds"] / max(n, 1)
        extra = "".join(f" -> {per * t / 60:.1f} min @{t // 1000}k" for t in TARGETS)
        cpu = f", CPU {r['cpu_seconds']:.2f} s" if "cpu_seconds" in r else ""
        return f"{per * 1e3:8.3f} {unit} ({r['seconds']:.2f} s{cpu}, RSS {r['peak_rss_mb']:.0f} MB){extra}"
    ratio = f"  x{base['seconds'] / new['seconds']:.1f}" if new and base and new["seconds"] > 0 else ""
    return f"  {label:<10} new {cell(new)}\n  {'':<10} old {cell(base)}{ratio}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Moto:
    """A moto S3 server on loopback whose access log counts requests."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = work / "moto.log"
        self.out = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                opener.open(self.endpoint, timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise SystemExit("moto server did not come up")
        self.options = {"key": "bench", "secret": "bench", "endpoint_url": self.endpoint}
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **self.options).mkdir("bench")

    def requests(self) -> dict[str, int]:
        text = self.log.read_text(errors="replace")
        counts: dict[str, int] = {}
        for method in re.findall(r'"(GET|PUT|POST|HEAD|DELETE) ', text):
            counts[method] = counts.get(method, 0) + 1
        return counts

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.out.close()


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child")
    parser.add_argument("--code", default=str(HERE))
    parser.add_argument("--store")
    parser.add_argument("--out")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--finalize", action="store_true")
    parser.add_argument("--storage-options", default="")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--baseline", default=str(HERE.parent / "i24-base"))
    parser.add_argument("--baseline-write-videos", type=int, default=1000)
    parser.add_argument("--s3-videos", type=int, default=1000)
    parser.add_argument("--work", default="/tmp/stpipe-bench-scale")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: s3, train, baseline-resume")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.child:
        args.op = args.child
        print(json.dumps(child(args)))
        return
    new, base = str(HERE), args.baseline
    if not Path(base, "pipeline", "store.py").is_file():
        raise SystemExit(f"--baseline {base}: not a checkout of stpipe (make one: git worktree add {base} main)")
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    common = dict(frames=args.frames, dim=args.dim)
    print(f"bench_scale: {args.frames} frames x {args.dim} float16 per video (pooled); new = {new}, old = {base}")
    print(f"cpus: {os.cpu_count()}, load average at start: {load_average()}")
    first_store = None
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            store = str(work / f"store-{n}.zarr")
            print(f"\n== {n:,} videos (load average {load_average()})")
            w_new = run_child(new, "write", store, n=n, finalize=True, **common)
            first_store = first_store or (store, n)
            nb = min(n, args.baseline_write_videos)
            w_base = run_child(base, "write", str(work / "base-write.zarr"), n=nb, **common)
            shutil.rmtree(work / "base-write.zarr", ignore_errors=True)
            print(f"  write      new {n / w_new['seconds']:8.0f} videos/s ({w_new['seconds']:.1f} s, "
                  f"RSS {w_new['peak_rss_mb']:.0f} MB; then index {w_new.get('index_seconds', 0):.1f} s, "
                  f"pack {w_new.get('pack_seconds', 0):.1f} s)")
            print(f"  {'':<10} old {nb / w_base['seconds']:8.0f} videos/s ({nb:,} videos, {w_base['seconds']:.1f} s, "
                  f"RSS {w_base['peak_rss_mb']:.0f} MB)  x{(n / w_new['seconds']) / (nb / w_base['seconds']):.1f}")
            for t in TARGETS:
                print(f"  {'':<10} writing {t // 1000}k videos: new {t / (n / w_new['seconds']) / 60:.1f} min, "
                      f"old {t / (nb / w_base['seconds']) / 60:.1f} min")
            du = subprocess.run(["du", "-sh", store], capture_output=True, text=True).stdout.split()[0]
            files = sum(len(f) + len(d) for _, d, f in os.walk(store))
            print(f"  on disk    {du}, {files:,} files and folders ({files / n:.1f} per video)")
            for op in ("resume", "index", "inspect", "load"):
                r_new = run_child(new, op, store)
                r_base = None if (op in ("resume", "index") and "baseline-resume" in skip and n > 10_000) else \
                    run_child(base, op, store)
                print(line(op, r_new, r_base, n))
            print(f"  (load average {load_average()})")
        if "s3" not in skip:
            s3(args, work, new, base, common)
            largest = max(int(s) for s in args.sizes.split(","))
            s3_at_scale(work, new, str(work / f"store-{largest}.zarr"), largest)
        if "train" not in skip and first_store:
            train(work, new, base, first_store)
    finally:
        if not args.keep:
            for path in work.glob("store-*.zarr"):
                shutil.rmtree(path, ignore_errors=True)
    print(f"\nload average at the end: {load_average()}")


def s3(args, work: Path, new: str, base: str, common: dict) -> None:
    n = args.s3_videos
    print(f"\n== S3 (moto on loopback), {n:,} videos (load average {load_average()})")
    moto = Moto(work)
    try:
        opts = json.dumps(moto.options)
        url = "s3://bench/store.zarr"
        for label, code, count in (("new", new, n), ("old", base, min(n, 200))):
            before = moto.requests()
            r = run_child(code, "write", f"s3://bench/write-{label}.zarr", n=count, storage_options=opts, **common)
            req = diff(moto.requests(), before)
            total = sum(req.values())
            print(f"  write {label}: {count / r['seconds']:.0f} videos/s, {total / count:.1f} requests per video {req}")
        run_child(new, "write", url, n=n, finalize=True, storage_options=opts, **common)
        for op in ("resume", "load"):
            for label, code in (("new", new), ("old", base)):
                before = moto.requests()
                r = run_child(code, op, url, storage_options=opts)
                req = diff(moto.requests(), before)
                total = sum(req.values())
                print(f"  {op:<6} {label}: {r['seconds']:.2f} s ({r['seconds'] / n * 1e3:.2f} ms/video -> "
                      f"{r['seconds'] / n * 220_000 / 60:.1f} min @220k), {total:,} requests "
                      f"({total / n * 1000:.0f} per 1,000 videos) {req}, RSS {r['peak_rss_mb']:.0f} MB")
    finally:
        moto.close()


def s3_at_scale(work: Path, new: str, store: str, n: int) -> None:
    """Stage-two load of the largest local store from S3: only what the load needs is uploaded (the
    root, index, pack and the first video's group, whose array metadata the pack is checked
    against), so a load that touched any other per-video object would fail here, not just be slow."""
    import s3fs

    from pipeline.store import FeatureStore

    print(f"\n== S3 stage-two load at {n:,} videos: the store's root, index and pack uploaded, no other "
          f"video group (load average {load_average()})")
    first = str(FeatureStore.open(store).index()["key"][0])
    moto = Moto(work)
    try:
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **moto.options)
        url = "s3://bench/scale.zarr"
        t = time.perf_counter()
        fs.put(str(Path(store, "zarr.json")), f"{url}/zarr.json")
        fs.put(str(Path(store, "videos", "zarr.json")), f"{url}/videos/zarr.json")
        for part in ("index", "failures", "pack", f"videos/{first}"):
            if Path(store, part).exists():
                fs.put(str(Path(store, part)), f"{url}/{part}", recursive=True)
        print(f"  uploaded in {time.perf_counter() - t:.0f} s")
        before = moto.requests()
        r = run_child(new, "load", url, storage_options=json.dumps(moto.options))
        req = diff(moto.requests(), before)
        total = sum(req.values())
        print(f"  load new: {r['videos']:,} videos in {r['seconds']:.1f} s, {total:,} requests "
              f"({total / n * 1000:.1f} per 1,000 videos; target <= 20) {req}, RSS {r['peak_rss_mb']:.0f} MB")
    finally:
        moto.close()


def train(work: Path, new: str, base: str, first_store: tuple[str, int]) -> None:
    """Samples/s as found (run this on an idle machine for the idle rate), then beside busy loops:
    one per core but one (a core left free: what thread sizing can keep) and one per core (the
    fair share of a 2-core machine is then 2/3 of a core, a ceiling no thread count lifts)."""
    store, n = first_store
    cores = os.cpu_count() or 1
    counts = sorted({max(1, cores - 1), cores})
    print(f"\n== train-head (mlp, 2 epochs) on {n:,} videos: samples/s as found and beside "
          f"{' or '.join(map(str, counts))} busy-loop processes")
    for label, code in (("new", new), ("old", base)):
        found = run_child(code, "train", store, out=str(work / f"run-{label}-idle"))
        shutil.rmtree(work / f"run-{label}-idle", ignore_errors=True)
        cells = [f"{found['samples_per_second']:,.0f} samples/s as found ({found['threads']} threads, "
                 f"load {load_average()})"]
        for count in counts:
            loops = busy_loops(count)
            try:
                time.sleep(20)  # the load average (which the new code reads) catches up with the loops
                loaded_load = load_average()
                loaded = run_child(code, "train", store, out=str(work / f"run-{label}-loaded"))
            finally:
                for proc in loops:
                    proc.kill()
                    proc.wait()
            shutil.rmtree(work / f"run-{label}-loaded", ignore_errors=True)
            cells.append(f"beside {count} loops {loaded['samples_per_second']:,.0f} ({loaded['threads']} threads, "
                         f"load {loaded_load}): {loaded['samples_per_second'] / found['samples_per_second']:.0%}")
            time.sleep(20)  # let the load average fall back before the next measurement
        print(f"  {label}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
