"""kill -9 `stpipe extract` at seeded moments, re-run it, and demand the store of an uninterrupted run.

Moments are fault hooks (`STPIPE_FAULT=<point>:<n>`, pipeline/faults.py) at every kind of store
write (a group begun, a chunk written, just before `complete`, a failure recorded, both halves of
index consolidation) with seeded hit numbers, plus kills at seeded random times once k groups
exist. After each kill the store must still open; after the re-run it must equal the reference:
same complete set, bit-identical arrays and attrs, no orphaned, half-written or temp files, index
and failures consistent. The slow variant adds 30 seeded random-time kills.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from fault_tools import assert_identical_store, assert_readable, debris, demo_subset
from zarr.errors import ZarrUserWarning

from pipeline.extraction import ExtractConfig
from pipeline.store import FeatureStore, video_key
from stages import extract

GOOD = ["moving_left_000", "moving_right_001", "moving_up_000", "moving_down_001", "rotating_clockwise_000",
        "zooming_in_001", "appearing_000", "disappearing_001"]
MISSING = ["lost_000"]  # its file does not exist: exercises failure records through every crash
SEED = 2024


def argv(manifest, store):
    return ["extract", "-m", str(manifest), "-o", str(store), "--backbone", "tiny", "--weights", "none",
            "--executor", "local", "--batch-size", "8", "--decode-threads", "2"]


def config(manifest, store):
    return ExtractConfig(manifest=str(manifest), output=str(store), backbone="tiny", weights="none",
                         executor="local", batch_size=8, decode_threads=2)


@pytest.fixture(scope="module")
def manifest(demo):
    return demo_subset(demo, GOOD, missing=MISSING)


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "s.zarr"
    result = extract.run(config(manifest, path))
    assert (result.done, result.failed) == (len(GOOD), len(MISSING))
    return path


def groups_at_least(store, k):
    return lambda: len(os.listdir(store / "videos")) >= k if (store / "videos").is_dir() else False


def moments(seed: int):
    """(name, STPIPE_FAULT, k for a timed kill): every write kind, seeded hit numbers."""
    rng = np.random.default_rng(seed)
    n = len(GOOD)  # begin/finish hits; one chunk write per video (pooled, short videos)
    return [
        ("first group begun", "begin:1", None),
        ("a later group begun", f"begin:{rng.integers(2, n + 1)}", None),
        ("first chunk written", "write:1", None),
        ("a middle chunk written", f"write:{rng.integers(2, n)}", None),
        ("last chunk written", f"write:{n}", None),
        ("before the first complete mark", "finish:1", None),
        ("before a later complete mark", f"finish:{rng.integers(2, n + 1)}", None),
        ("failure recorded, group not yet discarded", "failure:1", None),
        ("index consolidation: old index deleted", "index:1", None),
        ("index consolidation: arrays written, not marked", "index:2", None),
        ("pack written, not yet marked complete", "pack:1", None),
        ("random time after 2 groups", "", 2),
        ("random time after 5 groups", "", 5),
    ]


def kill_and_resume(launcher, manifest, reference, store, fault, after, rng):
    kill = {"kill_when": groups_at_least(store, after), "kill_delay": float(rng.uniform(0, 0.02))} if after else {}
    code, log = launcher.run(argv(manifest, store), fault=fault, **kill)
    assert code == -9, f"not killed ({fault or after}): exit {code}\n{log[-2000:]}"
    state = assert_readable(store)
    code, log = launcher.run(argv(manifest, store))
    assert code == 3, log[-2000:]  # PartialFailure: the missing video, recorded again
    assert f"failed: {MISSING[0]}" in log
    if state.get("complete"):
        assert f"resuming: {state['complete']}/{len(GOOD) + len(MISSING)} videos already complete" in log
    counts = assert_identical_store(reference, store)
    assert counts == {"complete": len(GOOD), "failed": len(MISSING)}
    return state


def test_kill_at_every_write_kind_then_resume_to_an_identical_store(launcher, manifest, reference, tmp_path):
    rng = np.random.default_rng(SEED)
    seen = []
    for i, (name, fault, after) in enumerate(moments(SEED)):
        state = kill_and_resume(launcher, manifest, reference, tmp_path / f"m{i}.zarr", fault, after, rng)
        seen.append((name, fault or f"timed>={after}", state))
    print("\n".join(f"killed at {name} ({fault}): store then held {state}" for name, fault, state in seen))
    assert len(seen) >= 13


def test_killed_again_while_resuming(launcher, manifest, reference, tmp_path):
    store = tmp_path / "s.zarr"
    for fault in ("write:3", "begin:2", "index:2"):  # three crashes in a row, each in the next re-run
        code, log = launcher.run(argv(manifest, store), fault=fault)
        assert code == -9, log[-2000:]
        assert_readable(store)
    code, log = launcher.run(argv(manifest, store))
    assert code == 3, log[-2000:]
    assert_identical_store(reference, store)


def test_cold_process_killed_by_the_hook(manifest, reference, tmp_path):
    """The hook in a plain `python -m cli extract` process (no launcher), then a plain re-run."""
    import subprocess
    import sys

    from fault_tools import REPO

    store = tmp_path / "s.zarr"
    env = {**os.environ, "STPIPE_FAULT": "finish:4", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "cli", *argv(manifest, store)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == -9, run.stderr[-2000:]
    assert FeatureStore.open(str(store)).complete_ids()  # some videos were done before the kill
    result = extract.run(config(manifest, store))
    assert result.skipped == 3 and result.done == len(GOOD) - 3
    assert_identical_store(reference, store)


def test_torn_states_a_kill_can_leave_are_repaired(manifest, reference, tmp_path):
    """States too brief to hit with a hook: a delete cut short (group zarr.json gone, arrays left),
    zarr temp files (`*.partial`) of writes cut short, an index without its zarr.json, a lease of a
    dead process. Before the fix a group's orphaned arrays made every later run fail."""
    import subprocess
    import sys

    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)
    videos = store / "videos"
    (videos / video_key(GOOD[0]) / "zarr.json").unlink()  # its delete was cut short
    shutil.rmtree(videos / video_key(GOOD[1]) / "rgb")  # half-written: group without its array
    s = FeatureStore.open(str(store), mode="r+")
    s.video_group(GOOD[1]).attrs["complete"] = False
    for folder in (store, videos, store / "failures", store / "failures" / video_key(MISSING[0])):
        (folder / f"zarr.{'0' * 32}.partial").write_bytes(b"")
    (videos / video_key(GOOD[2]) / "rgb" / f"zarr.{'1' * 32}.partial").write_bytes(b"{")
    shutil.rmtree(videos / video_key(GOOD[2]))  # ... and that group was deleted midway
    (videos / video_key(GOOD[2]) / "rgb" / "c").mkdir(parents=True)
    (videos / video_key(GOOD[2]) / "rgb" / "zarr.json").write_text("{}")
    (store / "index" / "zarr.json").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (store / "lease").mkdir()
    lease = {"host": os.uname().nodename, "pid": int(dead.stdout), "token": "x", "started": 0, "heartbeat": 0}
    (store / "lease" / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"stpipe_lease": lease}}))
    assert debris(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZarrUserWarning)  # swept before anything lists the groups
        result = extract.run(config(manifest, store))
    assert result.done == 3 and result.skipped == len(GOOD) - 3
    assert_identical_store(reference, store)


def test_index_is_never_stale_after_a_kill(launcher, demo, tmp_path):
    """A finished run with a failure, the file repaired, a re-run killed: readers must not see
    the old index; the resumed store equals a fresh run with the file present."""
    manifest = demo_subset(demo, GOOD[:3], missing=["late_000"])
    store = tmp_path / "s.zarr"
    assert extract.run(config(manifest, store)).failed == 1
    shutil.copy(demo / "videos" / "zooming_out_000.mp4", demo / "videos" / "late_000.mp4")
    try:
        code, log = launcher.run(argv(manifest, store), fault="write:1")  # the repaired video's chunk
        assert code == -9, log[-2000:]
        index = FeatureStore.open(str(store)).index()
        status = dict(zip(index["video_id"], index["status"]))
        assert status["late_000"] == "failed" and list(status.values()).count("complete") == 3
        fresh = tmp_path / "fresh.zarr"
        extract.run(config(manifest, fresh))
        code, log = launcher.run(argv(manifest, store))
        assert code == 0, log[-2000:]
        assert_identical_store(fresh, store)
    finally:
        (demo / "videos" / "late_000.mp4").unlink()


@pytest.mark.slow
def test_thirty_random_time_kills(launcher, manifest, reference, tmp_path):
    rng = np.random.default_rng(SEED + 1)
    for i in range(30):
        after = int(rng.integers(1, len(GOOD)))
        kill_and_resume(launcher, manifest, reference, tmp_path / f"r{i}.zarr", "", after, rng)
