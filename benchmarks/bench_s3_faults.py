"""A flaky object store: what retries cost. `stpipe import` of N videos into s3:// (moto on loopback)
through tests/faults/object_store.py's FaultProxy, fault-free and at a seeded fault rate, for each
retry setting: stpipe's (pipeline.store.urls.RUN_OPTIONS), botocore's default (legacy, 5 attempts), adaptive.
Then stage two's read of the train split through the same faults.

Reports per run: seconds, requests that reached the proxy, faults injected (each one is a retried
request: every run must end complete and equal to the fault-free store, which is checked), and the
slowdown against the fault-free run of the same setting.

Run: `.venv/bin/python benchmarks/bench_s3_faults.py [--videos 300] [--slowdown 0.10] [--reset 0.02]
[--error500 0.0] [--settings stpipe,legacy,adaptive] [--work /tmp/stpipe-bench-s3-faults]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(HERE), str(HERE / "tests"), str(HERE / "tests" / "faults")]

from object_store import KEY, SECRET, FaultProxy, make_bucket, moto_server  # noqa: E402

from pipeline.store import FeatureStore  # noqa: E402
from pipeline.store.urls import RUN_OPTIONS  # noqa: E402
from pipeline.training.data import load_split  # noqa: E402
from stages.import_features import ImportConfig, run  # noqa: E402

SETTINGS = {  # config_kwargs["retries"]
    "stpipe": RUN_OPTIONS["s3"]["config_kwargs"]["retries"],
    "legacy": {"mode": "legacy", "total_max_attempts": 5},  # botocore's default
    "adaptive": {"mode": "adaptive", "total_max_attempts": 10},
}


def features(work: Path, videos: int) -> Path:
    folder = work / "npy"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["video_id,path,label,split"]
    for i in range(videos):
        np.save(folder / f"v{i:05d}.npy", rng.standard_normal((10, 256)).astype(np.float32))
        lines.append(f"v{i:05d},v{i:05d}.mp4,c{i % 10},{'val' if i % 10 == 0 else 'train'}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    (folder / "m.classes.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    return folder


def one_run(moto: str, folder: Path, bucket: str, retries: dict, rates: dict, seed: int) -> dict:
    make_bucket(moto, bucket)
    with FaultProxy(moto, seed=seed, **rates) as proxy:
        options = {"endpoint_url": proxy.endpoint, "key": KEY, "secret": SECRET, "config_kwargs": {"retries": retries}}
        url = f"s3://{bucket}/s.zarr"
        start = time.perf_counter()
        result = run(ImportConfig(source=str(folder), manifest=str(folder / "m.csv"), output=url, storage_options=options))
        write_s = time.perf_counter() - start
        written = dict(proxy.counts)
        start = time.perf_counter()
        split = load_split(FeatureStore.open(url, storage_options=options), "train", storage_options=options)
        read_s = time.perf_counter() - start
        read = {k: v - written.get(k, 0) for k, v in proxy.counts.items()}
    return {"done": result.done, "failed": result.failed, "write_s": write_s, "read_s": read_s, "written": written,
            "read": read, "frames": split.streams["rgb"].frames, "ids": list(split.video_ids)}


def injected(counts: dict) -> int:
    return sum(v for k, v in counts.items() if k not in ("requests", "deny"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--slowdown", type=float, default=0.10)
    parser.add_argument("--reset", type=float, default=0.02)
    parser.add_argument("--error500", type=float, default=0.0)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/stpipe-bench-s3-faults")
    args = parser.parse_args()
    for name in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "HTTP_PROXY", "http_proxy"):
        os.environ.pop(name, None)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder = features(work, args.videos)
    rates = {"slowdown": args.slowdown, "reset": args.reset, "error500": args.error500}
    print(f"{args.videos} videos (10 x 256 float16 each) imported into s3:// through the proxy; faults {rates}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'setting':<9} {'faults':<7} {'import s':>9} {'requests':>9} {'retried':>8} {'slowdown':>9} "
          f"{'read s':>7} {'requests':>9} {'retried':>8} {'slowdown':>9}")
    with moto_server(work / "moto.log") as moto:
        reference = None
        for n, setting in enumerate(args.settings.split(",")):
            retries = SETTINGS[setting]
            clean = one_run(moto, folder, f"clean-{n}", retries, {}, args.seed)
            flaky = one_run(moto, folder, f"flaky-{n}", retries, rates, args.seed)
            reference = reference or clean
            for r in (clean, flaky):
                assert (r["done"], r["failed"]) == (args.videos, 0), r
                assert r["ids"] == reference["ids"] and np.array_equal(r["frames"], reference["frames"])
            for label, r in (("none", clean), ("on", flaky)):
                print(f"{setting:<9} {label:<7} {r['write_s']:>9.1f} {r['written']['requests']:>9,} "
                      f"{injected(r['written']):>8,} {r['write_s'] / clean['write_s']:>8.2f}x "
                      f"{r['read_s']:>7.2f} {r['read']['requests']:>9,} {injected(r['read']):>8,} "
                      f"{r['read_s'] / clean['read_s']:>8.2f}x")
            print(f"          faults injected while writing: {json.dumps({k: v for k, v in flaky['written'].items() if k != 'requests'})}",
                  flush=True)
    print("every run: all videos complete, 0 failed, the train split equal to the fault-free store's")


if __name__ == "__main__":
    main()
