"""Two writers on one store: the second is refused with one line naming the first; never corruption.

`stpipe extract` holds a lease (`<store>/lease/zarr.json`, pipeline/store/lease.py) for its whole
run. Rounds of two processes released at the same instant on one store: one extracts, the other
is refused (or, had it come after the first finished, finds nothing to do); the store always
equals an uninterrupted run's. Then the lease rules one by one, in-process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from fault_tools import assert_identical_store, debris

from pipeline.errors import StoreError
from pipeline.extraction import ExtractConfig
from pipeline.store.lease import StoreLease
from stages import extract

ROUNDS = 4


def argv(demo, store, *extra):
    return ["extract", "-m", str(demo / "manifest.csv"), "-o", str(store), "--backbone", "tiny", "--weights", "none",
            "--executor", "local", "--batch-size", "8", *extra]


def config(demo, store, **kw):
    return ExtractConfig(manifest=str(demo / "manifest.csv"), output=str(store), backbone="tiny", weights="none",
                         executor="local", batch_size=8, **kw)


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "s.zarr"
    extract.run(config(demo, path))
    return path


def refusal(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("stpipe: error:")]
    assert len(lines) == 1 and "Traceback" not in log, log[-2000:]
    return lines[0]


def test_two_extracts_started_at_once(launcher, demo, reference, tmp_path):
    outcomes = []
    for i in range(ROUNDS):
        store = tmp_path / f"s{i}.zarr"
        (a, log_a), (b, log_b) = launcher.run_together([argv(demo, store), argv(demo, store)], start_in=0.5)
        codes = sorted((a, b))
        if codes == [0, 2]:
            line = refusal(log_a if a == 2 else log_b)
            assert "in use by another stpipe run (pid" in line and socket.gethostname() in line
            outcomes.append("refused")
        else:  # the second came after the first had finished: it found every video complete
            assert codes == [0, 0], (log_a[-1500:], log_b[-1500:])
            assert "0 extracted, 20 already complete" in log_a + log_b
            outcomes.append("came after")
        assert_identical_store(reference, store)
    print(f"two extracts at once, {ROUNDS} rounds: {outcomes}")
    assert "refused" in outcomes


def test_overwrite_of_a_store_in_use_is_refused_before_deleting(launcher, demo, reference, tmp_path):
    store = tmp_path / "s.zarr"
    extract.run(config(demo, store))
    with StoreLease(str(store)):  # a live run elsewhere in this process
        code, log = launcher.run(argv(demo, store, "--overwrite", "--features", "spatial"))
        assert code == 2 and "in use by another stpipe run" in refusal(log)
        code, log = launcher.run(argv(demo, store))  # nothing to do: answered from the index, store untouched
        assert code == 0 and "20 already complete" in log, log[-1500:]
    assert not debris(store)
    assert_identical_store(reference, store)


def lease_file(store, **holder):
    path = store / "lease" / "zarr.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    lease = {"host": socket.gethostname(), "pid": os.getpid(), "token": "t0", "started": time.time(),
             "heartbeat": time.time(), **holder}
    path.write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"stpipe_lease": lease}}))


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


@pytest.mark.parametrize("holder, alive", [
    ({}, True),  # this very process: alive
    ({"pid": 0}, False),
    ("dead", False),  # a pid that has exited
    ({"pid_start": "1"}, False),  # our pid, but another process's start time: the pid was reused
    ({"host": "elsewhere", "heartbeat": time.time()}, True),  # another host, fresh heartbeat
    ({"host": "elsewhere", "heartbeat": time.time() - 3600}, False),  # another host, silent for an hour
    ({"token": ""}, False),  # unreadable
])
def test_lease_rules(tmp_path, holder, alive):
    store = tmp_path / "s.zarr"
    lease_file(store, **({"pid": dead_pid()} if holder == "dead" else holder))
    lease = StoreLease(str(store))
    if alive:
        with pytest.raises(StoreError, match="in use by another stpipe run"):
            lease.acquire()
        return
    with lease:
        assert lease.taken_over is not None and lease._holder() == lease.token
    assert not (store / "lease").exists() and not debris(store)


def test_heartbeat_renews_and_a_lost_lease_is_noticed(tmp_path):
    store = tmp_path / "s.zarr"
    lease = StoreLease(str(store), heartbeat=0.05).acquire()
    try:
        first = lease._io.read()["heartbeat"]
        time.sleep(0.3)
        assert lease._io.read()["heartbeat"] > first
        lease_file(store, token="intruder")  # as if another run judged us stale and took over
        time.sleep(0.2)
        with pytest.raises(StoreError, match="another run took over this store's lease"):
            lease.check()
    finally:
        lease.release()
    assert lease._io.read()["token"] == "intruder"  # release never deletes another run's lease


def test_memory_store_lease():
    """fsspec stores take the same lease through fsspec (create-if-absent, read back)."""
    url = "memory://lease-test/s.zarr"
    with StoreLease(url):
        with pytest.raises(StoreError, match="in use"):
            StoreLease(url).acquire()
    with StoreLease(url) as again:
        assert again.taken_over is None
