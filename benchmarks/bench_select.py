"""What `--select` costs per trial, beside a plain trial, and the search as first built vs now.

On a real store (e.g. the footage or demo dev set of benchmarks/README.md, issue 20), per head and
seed, on one copy of the features (as an ablation shares them; rgb, pooled, standardised as the
recipes ask):

- plain: `pipeline.training.loop.train` of the head's built-in recipe on the whole training split
  (what an ablation trial without --select does; val is evaluated every epoch as there);
- the search as first built (`select(order=AXES, early_stop=False)`: epochs x2 tried second, so
  every later point runs twice as long when it wins; every point trains its full length);
- the search now (`select()`: the longer length tried last, each point stops early on the inner
  split, pipeline.training.select.patience).

Prints seconds, the epochs trained over all points, and what each search chose (inner split only;
no val number is printed: the choice of the built-in recipes rests on these, never on val), and
writes every point of both searches to --out as JSON. The three run one after another per row
(the machine is shared: quote the load average printed at the start and end).

Run: `.venv/bin/python benchmarks/bench_select.py --store fd.zarr --heads fcn2d,st_resnet --seeds 0,1,2
[--batch-size 64] [--threads 2] [--out select.json]`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pipeline.heads import HEADS  # noqa: E402
from pipeline.store import FeatureStore  # noqa: E402
from pipeline.training.config import TrainHeadConfig  # noqa: E402
from pipeline.training.features import load_features  # noqa: E402
from pipeline.training.loop import train  # noqa: E402
from pipeline.training.select import AXES, select  # noqa: E402


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def chosen_text(found) -> str:
    c = found.chosen
    return f"lr {c.lr:g} ep {c.epochs} c {c.temporal_center:g} d {c.dropout:g} p {c.proj_dim}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--heads", default="fcn2d,st_resnet")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heads, seeds = args.heads.split(","), [int(s) for s in args.seeds.split(",")]
    store = FeatureStore.open(args.store)
    pooled = [HEADS.meta(h)["input_kind"] == "pooled" for h in heads]
    if not all(pooled):
        raise SystemExit("bench_select reads pooled features: pick pooled heads")
    with tempfile.TemporaryDirectory() as stats_dir:
        features = load_features(store, uses=[(("rgb",), True)], splits=("train", "val"),
                                 memory_budget_bytes=4 * 2**30, standardize=True, stats_dir=stats_dir)
    data = features.train_data(("rgb",), True)
    print(f"store {args.store}: {len(data.train)} train videos; threads {args.threads}; "
          f"load average at start {loadavg()}")
    header = (f"{'head':<15} {'seed':>4} {'plain s':>8} | {'first s':>8} {'ep':>4} {'chose':<34} | "
              f"{'now s':>7} {'ep':>4} {'chose':<34} | {'first/plain':>11} {'now/plain':>9}")
    print(header)
    rows = []
    for head in heads:
        for seed in seeds:
            cfg = TrainHeadConfig(store=args.store, head=head, segments=args.segments, seed=seed,
                                  batch_size=args.batch_size, device="cpu")
            tick = time.perf_counter()
            train(cfg, data)
            plain = time.perf_counter() - tick
            first = select(cfg, data, order=AXES, early_stop=False)
            now = select(cfg, data)
            epochs = [sum(p["epochs_run"] for p in s.points) for s in (first, now)]
            print(f"{head:<15} {seed:>4} {plain:>8.1f} | {first.seconds:>8.1f} {epochs[0]:>4} {chosen_text(first):<34} | "
                  f"{now.seconds:>7.1f} {epochs[1]:>4} {chosen_text(now):<34} | "
                  f"{first.seconds / plain:>11.1f} {now.seconds / plain:>9.1f}", flush=True)
            rows.append({"head": head, "seed": seed, "plain_seconds": plain, "first": first.record(),
                         "now": now.record()})
    total = [sum(r[k]["seconds"] for r in rows) for k in ("first", "now")]
    plain_total = sum(r["plain_seconds"] for r in rows)
    print(f"total: plain {plain_total:.0f} s, search as first built {total[0]:.0f} s, search now {total[1]:.0f} s "
          f"({total[1] / total[0]:.2f}x); load average at end {loadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
