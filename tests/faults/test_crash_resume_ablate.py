"""kill -9 `stpipe ablate` at seeded moments, re-run it, and demand the uninterrupted ablation:
no trial lost or repeated, every trial's training bit-identical to the reference.

Moments: the checkpoint hook at seeded checkpoint writes across the trials (inside a trial's
epoch loop), and seeded random times after k trials are in results.csv. The re-run is the same
command. results.csv must hold each trial once, `ok`, with the reference's metrics; each trial's
metrics.jsonl must hold each epoch once; last.pt tensors must equal the reference's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from store_fixtures import make_store

from pipeline.training.model import load_checkpoint

SEED = 5
HEADS = ("mlp", "trn_multiscale")
SEEDS = (0, 1)
EPOCHS = 2
VARYING = ("train_seconds", "attempts", "run_dir")  # timing, and where the run happened


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "order.zarr")
    make_store(url, per_class={"train": 8, "val": 4})
    return url


def argv(store_url, out):
    return ["ablate", "-s", store_url, "-o", str(out), "--heads", ",".join(HEADS), "--segments", "4",
            "--seeds", ",".join(map(str, SEEDS)), "--epochs", str(EPOCHS), "--batch-size", "16", "--proj-dim", "32",
            "--lr", "0.5", "--executor", "local", "--device", "cpu"]


@pytest.fixture(scope="module")
def reference(launcher, store_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ablation"
    code, log = launcher.run(argv(store_url, out))
    assert code == 0, log[-2000:]
    return out


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def trial_key(row) -> tuple:
    return row["head"], row["segments"], row["modality"], row["seed"]


def checkpoint_writes(out: Path) -> int:
    total = 0
    for metrics in (out / "trials").glob("*/metrics.jsonl"):
        best, history = -1.0, [json.loads(x) for x in metrics.read_text().splitlines()]
        total += len(history)
        for record in history:
            if record["val_top1"] > best:
                best, total = record["val_top1"], total + 1
    return total


def assert_same_ablation(reference: Path, out: Path) -> int:
    ref, got = rows(reference), rows(out)
    keys = [trial_key(r) for r in got]
    assert len(keys) == len(set(keys)) == len(HEADS) * len(SEEDS)  # no trial lost or repeated
    assert sorted(keys) == sorted(trial_key(r) for r in ref)
    by_key = {trial_key(r): r for r in ref}
    for row in got:
        want = by_key[trial_key(row)]
        assert row["status"] == "ok", row
        assert {k: v for k, v in row.items() if k not in VARYING} == {k: v for k, v in want.items() if k not in VARYING}
        trial = Path(row["run_dir"]).name
        epochs = [json.loads(x)["epoch"] for x in (out / "trials" / trial / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, len(epochs) + 1)), epochs  # every epoch once
        a = load_checkpoint(reference / "trials" / trial / "last.pt")["model"]
        b = load_checkpoint(out / "trials" / trial / "last.pt")["model"]
        assert all(torch.equal(a[name], b[name]) for name in a), trial
    assert not (out / "failures.json").exists()
    assert not list(out.rglob("*.tmp")), list(out.rglob("*.tmp"))
    return len(got)


def trials_done(out: Path, k: int):
    path = out / "results.csv"
    return lambda: path.is_file() and sum(r["status"] == "ok" for r in rows(out)) >= k


def test_kill_ablate_then_rerun_loses_and_repeats_no_trial(launcher, store_url, reference, tmp_path):
    rng = np.random.default_rng(SEED)
    total = checkpoint_writes(reference)
    moments = [f"checkpoint:{n}" for n in (1, int(rng.integers(2, total // 2)), int(rng.integers(total // 2, total)))]
    moments += [int(rng.integers(1, len(HEADS) * len(SEEDS)))]  # trials finished before a timed kill
    outcomes = [kill_and_rerun(launcher, store_url, reference, tmp_path / f"a{i}", moment, rng)
                for i, moment in enumerate(moments)]
    print("\n".join(f"ablate killed at {m}: {k} trials were finished" for m, k in zip(moments, outcomes)))


def kill_and_rerun(launcher, store_url, reference, out, moment, rng) -> int:
    kill = ({"fault": moment} if isinstance(moment, str) else
            {"kill_when": trials_done(out, moment), "kill_delay": float(rng.uniform(0, 0.3))})
    code, log = launcher.run(argv(store_url, out), **kill)
    assert code == -9, f"not killed at {moment}: exit {code}\n{log[-2000:]}"
    finished = sum(r["status"] == "ok" for r in rows(out)) if (out / "results.csv").is_file() else 0
    code, log = launcher.run(argv(store_url, out))
    assert code == 0, log[-2000:]
    assert assert_same_ablation(reference, out) == len(HEADS) * len(SEEDS)
    return finished


@pytest.mark.slow
def test_ten_random_time_kills(launcher, store_url, reference, tmp_path):
    rng = np.random.default_rng(SEED + 1)
    for i in range(10):
        kill_and_rerun(launcher, store_url, reference, tmp_path / f"r{i}", int(rng.integers(0, len(HEADS) * len(SEEDS))),
                       rng)
