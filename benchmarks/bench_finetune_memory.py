"""Issue 21: the commands a new user types, at their defaults, with a real backbone: peak memory and speed.

Runs, as subprocesses in one work folder (each one's peak resident memory: the process itself, and
the sum over it and its children, sampled every 0.2 s; wall time; the load average beside it):
  stpipe demo-data -o demo
  stpipe extract -m demo/manifest.csv -o s.zarr --backbone mobilenet_v2 --weights IMAGENET1K_V1 --executor local
  stpipe train-head -s s.zarr --head mlp --segments 8 -o run
  stpipe predict --run run demo/videos/<the first 40 videos>
  stpipe finetune --run run -m demo/manifest.csv -o ft --epochs 1                 (the default batch, 32)
  stpipe finetune --run run -m demo/manifest.csv -o ft8 --epochs E --batch-size 8 --micro-batch 8 --seed S  (plain step)
  stpipe finetune --run run -m demo/manifest.csv -o ft8m --epochs E --batch-size 8 --micro-batch 1 --seed S (accumulated)
  the finished extract again (a no-op) beside `stpipe inspect s.zarr`
and prints, per fine-tune, the micro-batch chosen, frames/s, val top-1 before/after and the train
loss, so the plain and the accumulated step of the same batch can be compared: with `--seeds 0,1,2`
each seed's pair, then per epoch the mean and spread over seeds of both (the difference between
the two is within noise when it is within the seeds' spread).
`--steps` runs a subset (e.g. `--steps extract,train-head,predict,b8`).
mobilenet_v2's ImageNet weights must be in $TORCH_HOME/hub/checkpoints (copied from
$STPIPE_ASSETS/weights when present). Steps whose output exists in --out are not rerun.
Run: `.venv/bin/python benchmarks/bench_finetune_memory.py --out /tmp/ft-mem` (tens of minutes on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

STPIPE = str(Path(sys.executable).with_name("stpipe"))


def tree_rss(pid: int) -> tuple[int, int]:
    """(rss of pid, rss of pid and all its descendants) in bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return rss.get(pid, 0), total


def run(args: list[str], cwd: Path, log: Path) -> dict:
    load = open("/proc/loadavg").read().split()[0]
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([STPIPE, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        peak = [0, 0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                own, total = tree_rss(proc.pid)
                peak[0], peak[1] = max(peak[0], own), max(peak[1], total)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        stop.set()
        sampler.join()
    code = os.waitstatus_to_exitcode(status)
    return {"cmd": "stpipe " + " ".join(args), "code": code, "seconds": time.perf_counter() - started,
            "load": load, "peak_gb": max(usage.ru_maxrss * 1024, peak[0]) / 1e9, "tree_peak_gb": peak[1] / 1e9}


def noop_vs_inspect(work: Path, extract_cmd: list[str]) -> None:
    """The finished extraction re-run (answers from the store's index) beside `stpipe inspect`, alternating."""
    times: dict[str, list[float]] = {"extract (finished, no-op)": [], "inspect": []}
    for _ in range(3):
        for label, cmd in (("extract (finished, no-op)", extract_cmd), ("inspect", ["inspect", "s.zarr"])):
            row = run(cmd, work, work / "noop.log")
            times[label].append(row["seconds"])
            times.setdefault(label + " load", []).append(float(row["load"]))
    for label in ("extract (finished, no-op)", "inspect"):
        t = sorted(times[label])
        print(f"{label}: median {t[1]:.2f} s of {', '.join(f'{x:.2f}' for x in times[label])} "
              f"(load {', '.join(str(x) for x in times[label + ' load'])})", flush=True)


def summary(work: Path, name: str) -> None:
    path = work / name / "metrics.json"
    if not path.is_file():
        return
    m = json.loads(path.read_text())
    history = [json.loads(line) for line in (work / name / "metrics.jsonl").read_text().splitlines()]
    sizing = m.get("micro_batch") or {}
    print(f"{name}: batch {m.get('batch_size')}, micro-batch {sizing.get('micro_batch')} x "
          f"{sizing.get('accum_steps')} (clip {sizing.get('clip_gb')} GB, {sizing.get('available_gb')} GB "
          f"available), {m['frames_per_second']:.2f} training frames/s; val top-1 {m['start_val_top1']:.2%} "
          f"before -> {history[-1]['val_top1']:.2%} after epoch {len(history)} (head only {m['head_only_val_top1']:.2%}); "
          f"train loss {history[-1]['train_loss']:.4f}, val loss {history[-1]['val_loss']:.4f}", flush=True)


def loss_curves(work: Path, seeds: list[int]) -> None:
    """Per epoch: train and val loss of the plain and the accumulated step, mean and spread over seeds."""
    import statistics

    def history(name: str) -> list[dict]:
        path = work / name / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    runs = {kind: [history(f"{prefix}-s{seed}") for seed in seeds] for kind, prefix in (("plain", "ft8"),
                                                                                          ("accumulated", "ft8m"))}
    epochs = min((len(h) for hs in runs.values() for h in hs), default=0)
    print(f"plain (8 x 1) vs accumulated (1 x 8) step, batch 8, seeds {seeds}: mean (min-max) per epoch")
    for e in range(epochs):
        cells = []
        for key in ("train_loss", "val_loss", "val_top1"):
            for kind in ("plain", "accumulated"):
                values = [h[e][key] for h in runs[kind]]
                cells.append(f"{key} {kind} {statistics.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})")
        print(f"  epoch {e + 1}: " + "; ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="ft-mem", help="work folder (kept; finished steps are not rerun)")
    parser.add_argument("--skip-b8", action="store_true", help="only the default-batch fine-tune")
    parser.add_argument("--steps", default="demo,extract,train-head,predict,ft,noop,b8",
                        help="which steps to run (those a later step needs are run when missing)")
    parser.add_argument("--seeds", default="0", help="seeds of the batch-8 plain/accumulated pair")
    parser.add_argument("--b8-epochs", type=int, default=1)
    args = parser.parse_args()
    wanted = set(args.steps.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    assets = os.environ.get("STPIPE_ASSETS")
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    if assets and not (hub / "mobilenet_v2-b0353104.pth").is_file():
        hub.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(assets) / "weights" / "mobilenet_v2-b0353104.pth", hub)
    extract = ["extract", "-m", "demo/manifest.csv", "-o", "s.zarr", "--backbone", "mobilenet_v2", "--weights",
               "IMAGENET1K_V1", "--executor", "local"]
    steps = [
        ("demo", "demo", ["demo-data", "-o", "demo"]),
        ("extract", "s.zarr", extract),
        ("train-head", "run", ["train-head", "-s", "s.zarr", "--head", "mlp", "--segments", "8", "-o", "run"]),
        ("predict", "predict", None),
        ("ft", "ft", ["finetune", "--run", "run", "-m", "demo/manifest.csv", "-o", "ft", "--epochs", "1"]),
        ("noop", "", None),
    ]
    if not args.skip_b8:
        for seed in seeds:
            steps += [("b8", f"{prefix}-s{seed}", ["finetune", "--run", "run", "-m", "demo/manifest.csv", "-o",
                                                    f"{prefix}-s{seed}", "--epochs", str(args.b8_epochs),
                                                    "--batch-size", "8", "--micro-batch", micro, "--seed", str(seed)])
                      for prefix, micro in (("ft8", "8"), ("ft8m", "1"))]
    mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal:"))) * 1024
    print(f"machine: {os.cpu_count()} cores, {mem / 1e9:.1f} GB RAM")
    for step, name, cmd in steps:
        needed = step in ("demo", "extract", "train-head")  # what later steps read
        if step not in wanted and not (needed and not (work / name).exists()):
            continue
        if step == "noop":
            noop_vs_inspect(work, extract)
            continue
        if step == "predict":
            videos = sorted(str(p.relative_to(work)) for p in (work / "demo" / "videos").iterdir())[:40]
            cmd = ["predict", "--run", "run", *videos]
        elif (work / name).exists() and (not name.startswith("ft") or (work / name / "metrics.json").is_file()):
            print(f"{name}: exists, not rerun")
            continue
        row = run(cmd, work, work / f"{step if step == 'predict' else name}.log")
        print(f"{row['cmd'][:150]}\n  exit {row['code']}, {row['seconds']:.0f} s (load {row['load']}), peak RSS "
              f"{row['peak_gb']:.2f} GB ({row['tree_peak_gb']:.2f} GB with its children, "
              f"{row['tree_peak_gb'] * 1e9 / mem:.0%} of RAM)", flush=True)
        if name.startswith("ft"):
            summary(work, name)
    if "b8" in wanted and not args.skip_b8:
        loss_curves(work, seeds)


if __name__ == "__main__":
    main()
