"""The store at dataset scale, as a user meets it: whole commands at their defaults, this checkout
beside a baseline checkout, on N-video pooled stores made by `stpipe import` of an HDF5 export.

`--parts commands` (the default) builds a real source once: the demo's videos (`stpipe demo-data`),
mobilenet_v2 pooled features (`stpipe extract --features pooled`, ImageNet weights from
../shared/assets), `stpipe export`; then an HDF5 of N videos with those features copied under new
ids (80/20 train/val, as the demo's split). Per size and code, each a fresh process, timed from the
outside (wall) on the command lines users type:

- `stpipe import big.h5 -o store.zarr` (start-up, the pack and the index included);
- `stpipe train-head -s store.zarr --head mlp --segments 8 --epochs 1 -o runs/a`, then the same into
  runs/b (the second run): wall, and `load_seconds` of metrics.json (everything before the first step,
  statistics included: every recipe standardises);
- `stpipe ablate -s store.zarr --heads mlp,tsn --segments 8 --seeds 0 --train-options '{"epochs": 1}'`:
  the shared load it prints;
- `stpipe inspect store.zarr`.

`--parts internals,s3,train` are issue 24's measurements inside functions (write, resume, index,
inspect, load of synthetic stores; S3 request counts on moto; train-head beside busy loops).

Run: `.venv/bin/python benchmarks/bench_scale.py [--sizes 5000,20000] [--baseline ../base]
[--baseline-max 5000] [--work /tmp/stpipe-bench-scale] [--keep]`; check the load average first.
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
        if has(args.code, "store/writer"):  # this checkout: several videos in flight on object stores, as import does
            from pipeline.store.writer import Writer as WritePool
            from pipeline.store.writer import write_threads
        elif has(args.code, "store_writes"):  # checkouts before the store package
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
            write_pack = None
            if has(args.code, "store/pack"):
                from pipeline.store.pack import write_pack
            elif has(args.code, "store_pack"):  # checkouts before the store package
                from pipeline.store_pack import write_pack
            if write_pack is not None:
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
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--baseline", default=str(HERE.parent / "i24-base"))
    parser.add_argument("--baseline-write-videos", type=int, default=1000)
    parser.add_argument("--s3-videos", type=int, default=1000)
    parser.add_argument("--work", default="/tmp/stpipe-bench-scale")
    parser.add_argument("--parts", default="commands", help="comma-separated: commands, internals, s3, train")
    parser.add_argument("--baseline-max", type=int, default=5000, help="commands: the baseline up to this size")
    parser.add_argument("--skip", default="", help="internals: baseline-resume (old resume/index above 10k), "
                        "baseline-large (every old step above 10k)")
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
    parts = set(filter(None, args.parts.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if "commands" in parts:
        commands(args, work, new, base)
    if parts & {"internals", "s3", "train"}:
        internals(args, work, new, base, skip, parts)
    print(f"\nload average at the end: {load_average()}")


# ---- whole commands -----------------------------------------------------------------------------


def stpipe(code: str, argv: list[str], cwd: Path) -> tuple[float, str]:
    """`stpipe argv` of that checkout in a fresh process (its code first on sys.path); wall seconds
    and stderr+stdout."""
    env = {**os.environ, "PYTHONPATH": code}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"stpipe {' '.join(argv)} with {code} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def source_export(work: Path) -> Path:
    """The demo's videos as mobilenet_v2 pooled features, exported to HDF5 (made once per --work)."""
    h5 = work / "demo-features.h5"
    if h5.is_file():
        return h5
    from shared_assets import default_assets

    weights = default_assets() / "weights" / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        raise SystemExit(f"{weights}: missing (the commands part extracts real mobilenet_v2 features)")
    here = str(HERE)
    stpipe(here, ["demo-data", "-o", "demo"], work)
    stpipe(here, ["extract", "-m", "demo/manifest.csv", "-o", "demo.zarr", "--features", "pooled",
                  "--executor", "local", "--weights", str(weights)], work)
    stpipe(here, ["export", "demo.zarr", str(h5)], work)
    return h5


def copies(source: Path, out: Path, n: int) -> Path:
    """An stpipe HDF5 export of n videos: the source's videos copied in turn under new ids."""
    import h5py
    import numpy as np

    if out.is_file():
        return out
    with h5py.File(source, "r") as f, h5py.File(out.with_suffix(".partial"), "w") as g:
        g.attrs.update({k: v for k, v in f.attrs.items()})
        g.attrs["failures"] = "[]"
        f.copy("classes", g)
        names = sorted(f["videos"])
        videos, columns = g.create_group("videos"), {c: [] for c in ("video_id", "key", "label", "split", "num_frames")}
        for i in range(n):
            src, video_id = f["videos"][names[i % len(names)]], f"v{i:07d}"
            attrs = {**json.loads(src.attrs["stpipe"]), "video_id": video_id}
            group = videos.create_group(video_id)
            group.attrs.update({**src.attrs, "video_id": video_id, "stpipe": json.dumps(attrs)})
            for name in src:
                f.copy(src[name], group, name=name)
            for column, value in zip(columns, (video_id, video_id, attrs["label_index"], attrs["split"],
                                               attrs["num_frames"])):
                columns[column].append(value)
        index = g.create_group("index")
        for column, values in {**columns, "status": ["complete"] * n}.items():
            strings = isinstance(values[0], str)
            index.create_dataset(column, data=np.array(values, dtype=object if strings else np.int64),
                                 dtype=h5py.string_dtype() if strings else None)
    out.with_suffix(".partial").rename(out)
    return out


def commands(args, work: Path, new: str, base: str) -> None:
    print(f"bench_scale commands: new = {new}, old = {base}; cpus {os.cpu_count()}, load average {load_average()}")
    source = source_export(work)
    for n in [int(x) for x in args.sizes.split(",")]:
        h5 = copies(source, work / f"videos-{n}.h5", n)
        codes = [("new", new)] + ([("old", base)] if n <= args.baseline_max else [])
        print(f"\n== {n:,} videos, {h5.stat().st_size / 2**20:.0f} MiB of HDF5 (load average {load_average()})")
        rows: dict[str, dict[str, str]] = {}
        for label, code in codes:
            for path in work.glob(f"{label}-*"):
                shutil.rmtree(path, ignore_errors=True)
            store, row = f"{label}-{n}.zarr", rows.setdefault(label, {})
            seconds, _ = stpipe(code, ["import", str(h5), "-o", store], work)
            row["import"] = f"{seconds:6.1f} s = {n / seconds:5.0f} videos/s"
            for run in ("first", "second"):
                out = f"{label}-runs/{run}"
                seconds, _ = stpipe(code, ["train-head", "-s", store, "--head", "mlp", "--segments", "8",
                                           "--epochs", "1", "-o", out], work)
                load = json.loads((work / out / "metrics.json").read_text())["load_seconds"]
                row[f"train-head {run}"] = f"load {load:6.2f} s = {load / n * 1e3:5.2f} ms/video (wall {seconds:.1f} s)"
            _, text = stpipe(code, ["ablate", "-s", store, "--heads", "mlp,tsn", "--segments", "8", "--seeds", "0",
                                    "--train-options", '{"epochs": 1}', "-o", f"{label}-runs/ablation"], work)
            found = re.search(r"features loaded once for every trial in ([0-9.]+) s", text)
            row["ablate shared load"] = (f"{float(found[1]):6.2f} s = {float(found[1]) / n * 1e3:5.2f} ms/video"
                                         if found else "(not printed by this code)")
            seconds, _ = stpipe(code, ["inspect", store], work)
            row["inspect"] = f"{seconds:6.2f} s"
            print(f"  ({label} done, load average {load_average()})")
        for what in rows["new"]:
            print(f"  {what:<20} " + "   ".join(f"{label} {row[what]}" for label, row in rows.items()))
        if not args.keep:
            for path in list(work.glob("new-*")) + list(work.glob("old-*")):
                shutil.rmtree(path, ignore_errors=True)


def internals(args, work: Path, new: str, base: str, skip: set[str], parts: set[str]) -> None:
    common = dict(frames=args.frames, dim=args.dim)
    print(f"bench_scale: {args.frames} frames x {args.dim} float16 per video (pooled); new = {new}, old = {base}")
    print(f"cpus: {os.cpu_count()}, load average at start: {load_average()}")
    first_store = None
    try:
        for n in [int(s) for s in args.sizes.split(",")] if "internals" in parts else ():
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
                skip_base = n > 10_000 and ("baseline-large" in skip or ("baseline-resume" in skip and
                                                                          op in ("resume", "index")))
                r_base = None if skip_base else run_child(base, op, store)
                print(line(op, r_new, r_base, n))
            print(f"  (load average {load_average()})")
        if "s3" in parts:
            s3(args, work, new, base, common)
            largest = max(int(s) for s in args.sizes.split(","))
            s3_at_scale(work, new, str(work / f"store-{largest}.zarr"), largest)
        if "train" in parts and first_store:
            train(work, new, base, first_store)
    finally:
        if not args.keep:
            for path in work.glob("store-*.zarr"):
                shutil.rmtree(path, ignore_errors=True)


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
