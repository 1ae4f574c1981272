"""kill -9 `stpipe train-head` at seeded moments, resume it, and demand the uninterrupted run.

Moments: the checkpoint hook (`STPIPE_FAULT=checkpoint:<n>`: the n-th checkpoint is written to
its temp file but not yet renamed into place; n seeded, plus the first, second and last), and
seeded random times after k epochs. The re-run uses `--resume` when last.pt exists (else the same
command, which starts over). The resumed run must end bit-identical to the uninterrupted one:
model and optimizer tensors, schedule and RNG-driven history, best checkpoint, metrics.jsonl, and
no temp files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from store_fixtures import make_store

from pipeline.training.config import TrainHeadConfig
from pipeline.training.model import load_checkpoint
from stages import train_head

SEED = 7
TIMING = ("seconds", "samples_per_second", "train_seconds", "load_seconds")
OPTIONS = dict(head="trn_multiscale", segments=4, epochs=5, lr=0.5, plateau_patience=1, batch_size=16,
               proj_dim=32, device="cpu")


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "order.zarr")
    make_store(url, per_class={"train": 8, "val": 4})
    return url


@pytest.fixture(scope="module")
def reference(store_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    train_head.run(TrainHeadConfig(store=store_url, out=str(out), **OPTIONS))
    return out


def argv(store_url, out, *, resume=False):
    flags = {"--head": "head", "--segments": "segments", "--epochs": "epochs", "--lr": "lr",
             "--patience": "plateau_patience", "--batch-size": "batch_size", "--proj-dim": "proj_dim",
             "--device": "device"}
    args = ["train-head", "-s", store_url, "-o", str(out)]
    for flag, name in flags.items():
        args += [flag, str(OPTIONS[name])]
    return args + (["--resume"] if resume else [])


def checkpoint_writes(reference: Path) -> int:
    """How many checkpoint files the uninterrupted run wrote: last.pt each epoch, checkpoint.pt on improvement."""
    history = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    best, improved = -1.0, 0
    for record in history:
        if record["val_top1"] > best:
            best, improved = record["val_top1"], improved + 1
    return len(history) + improved


def assert_same_run(reference: Path, out: Path) -> int:
    assert not list(out.glob("*.tmp")), list(out.glob("*.tmp"))
    a, b = load_checkpoint(reference / "last.pt"), load_checkpoint(out / "last.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert ka == kb and all(torch.equal(va[k], vb[k]) for k in va), ka
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["schedule"] == b["schedule"]
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMING} for r in records]  # noqa: E731
    assert strip(a["state"]["history"]) == strip(b["state"]["history"])
    for key in ("epoch", "best_top1", "best_epoch", "stopped"):
        assert a["state"][key] == b["state"][key], key
    best_a, best_b = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert best_a["epoch"] == best_b["epoch"]
    for name in best_a["model"]:
        assert torch.equal(best_a["model"][name], best_b["model"][name]), name
    lines = lambda path: strip(json.loads(x) for x in path.read_text().splitlines())  # noqa: E731
    assert lines(reference / "metrics.jsonl") == lines(out / "metrics.jsonl")
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (reference, out))
    assert {k: v for k, v in ma.items() if k not in TIMING} == {k: v for k, v in mb.items() if k not in TIMING}
    return a["state"]["epoch"]


def epochs_done(out: Path, k: int):
    path = out / "metrics.jsonl"
    return lambda: k <= 0 or (path.is_file() and len(path.read_text().splitlines()) >= k)


def test_kill_at_checkpoint_writes_and_random_times_then_resume(launcher, store_url, reference, tmp_path):
    rng = np.random.default_rng(SEED)
    total = checkpoint_writes(reference)
    moments = [f"checkpoint:{n}" for n in (1, 2, int(rng.integers(3, total)), total)]
    moments += [int(rng.integers(1, 3)), int(rng.integers(2, 5))]  # epochs done before a timed kill
    outcomes = [kill_and_resume(launcher, store_url, reference, tmp_path / f"run{i}", moment, rng)
                for i, moment in enumerate(moments)]
    print("\n".join(f"train-head killed at {m}: resumed after epoch {e}" for m, e in zip(moments, outcomes)))


def kill_and_resume(launcher, store_url, reference, out, moment, rng) -> int:
    kill = ({"fault": moment} if isinstance(moment, str) else
            {"kill_when": epochs_done(out, moment), "kill_delay": float(rng.uniform(0, 0.05))})
    code, log = launcher.run(argv(store_url, out), **kill)
    assert code == -9, f"not killed at {moment}: exit {code}\n{log[-2000:]}"
    resumable = (out / "last.pt").is_file()
    saved = load_checkpoint(out / "last.pt")["state"]["epoch"] if resumable else 0
    code, log = launcher.run(argv(store_url, out, resume=resumable))
    assert code == 0, log[-2000:]
    if resumable:
        assert f"resuming {out} after epoch {saved}" in log
    assert assert_same_run(reference, out) == OPTIONS["epochs"]
    return saved


@pytest.mark.slow
def test_twenty_random_time_kills(launcher, store_url, reference, tmp_path):
    rng = np.random.default_rng(SEED + 1)
    for i in range(20):
        kill_and_resume(launcher, store_url, reference, tmp_path / f"r{i}", int(rng.integers(0, OPTIONS["epochs"])), rng)


def test_kill_between_last_checkpoint_and_metrics_log(store_url, reference, tmp_path):
    """The final epoch's last.pt is saved but metrics.jsonl not yet rewritten: the resumed run
    has no epoch left to train and must still leave the full log."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (out / "metrics.json").unlink()
    train_head.run(TrainHeadConfig(store=store_url, out=str(out), resume=True, **OPTIONS))
    assert_same_run(reference, out)
