"""Shared tools of the fault suite: a launcher for killable `stpipe` processes and store checks.

`Launcher` keeps one Python process that has imported torch, zarr, PyAV and stpipe, and forks a
fresh child for every `stpipe ...` command (the child runs `cli.main(argv)` and exits with its
code). A kill -9 of that child is a kill -9 of a real `stpipe` process, while each run costs a
fork instead of a 5-15 s cold start on a loaded 2-core machine. `STPIPE_FAULT` is set in the child
before `pipeline.faults` is re-read, so the fault hooks see it as they would in a cold process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pipeline.store import FeatureStore, video_key

REPO = Path(__file__).resolve().parents[2]

_SERVER = r"""
import importlib, json, os, sys, time, traceback
import numpy, torch, torchvision, zarr, av  # the slow imports, paid once
import cli, pipeline.faults
from stages import extract, train_head
import pipeline.backbones, pipeline.training.loop, pipeline.extraction
try:
    from stages import ablate  # once it exists
except ImportError:
    pass
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)  # {"runs": [{"argv", "env", "log"}, ...], "start_at": time.time() value}
    sys.stdout.flush(); sys.stderr.flush()
    pids = []
    for run in request["runs"]:
        pid = os.fork()
        if pid == 0:
            log = os.open(run["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1); os.dup2(log, 2)
            os.environ.update(run["env"])
            importlib.reload(pipeline.faults)  # hooks read STPIPE_FAULT at import
            time.sleep(max(0.0, request["start_at"] - time.time()))  # runs started together start at once
            code = 0
            try:
                cli.main(run["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        pids.append(pid)
    print("pids " + " ".join(map(str, pids)), flush=True)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print("exits " + " ".join(map(str, codes)), flush=True)
"""


class Launcher:
    """Runs `stpipe` commands in forked children of one pre-imported process (see module docstring)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.runs = 0
        env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("STPIPE_FAULT", None)
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", _SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"launcher did not start: {line!r}"

    def run(self, argv: list[str], *, fault: str = "", kill_when: Callable[[], bool] | None = None,
            kill_delay: float = 0.0, timeout: float = 300.0) -> tuple[int, str]:
        """Run `stpipe argv`; returns (exit code, output). Negative codes are signals (-9: killed).

        fault: STPIPE_FAULT for the child. kill_when: polled every 2 ms from the moment the child
        starts; once true the child is sent SIGKILL after `kill_delay` seconds.
        """
        (code, out), = self.run_together([argv], faults=[fault], kill_when=kill_when, kill_delay=kill_delay,
                                         timeout=timeout)
        return code, out

    def run_together(self, argvs: list[list[str]], *, faults: list[str] | None = None, start_in: float = 0.0,
                     kill_when: Callable[[], bool] | None = None, kill_delay: float = 0.0,
                     timeout: float = 300.0) -> list[tuple[int, str]]:
        """Run several commands as concurrent processes that all start `start_in` seconds from now."""
        logs = []
        runs = []
        for argv, fault in zip(argvs, faults or [""] * len(argvs)):
            self.runs += 1
            logs.append(self.logs / f"run-{self.runs:03d}.log")
            runs.append({"argv": argv, "env": {"STPIPE_FAULT": fault} if fault else {}, "log": str(logs[-1])})
        self.proc.stdin.write(json.dumps({"runs": runs, "start_at": time.time() + start_in}) + "\n")
        self.proc.stdin.flush()
        pids = [int(p) for p in self.proc.stdout.readline().split()[1:]]
        done = threading.Event()
        if kill_when is not None:
            threading.Thread(target=_killer, args=(pids[0], kill_when, kill_delay, done), daemon=True).start()
        deadlines = [threading.Timer(timeout, _kill, args=(pid,)) for pid in pids]
        for deadline in deadlines:
            deadline.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            done.set()
            for deadline in deadlines:
                deadline.cancel()
        codes = [int(c) for c in line.split()[1:]]
        # a child killed in its first instant may not have opened its log yet
        return [(code, log.read_text(errors="replace") if log.exists() else "") for code, log in zip(codes, logs)]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _killer(pid: int, when: Callable[[], bool], delay: float, done: threading.Event) -> None:
    while not done.is_set():
        try:
            ready = when()
        except Exception:  # noqa: BLE001 - the store is mid-write: ask again
            ready = False
        if ready:
            time.sleep(delay)
            if not done.is_set():
                _kill(pid)
            return
        time.sleep(0.002)


# ---- store checks ---------------------------------------------------------------------------------


def debris(path: Path) -> list[str]:
    """Everything a killed run may leave that a finished one must not: temp files, a lease."""
    found = [str(p) for p in path.rglob("*.partial")] + [str(p) for p in path.rglob("*.tmp")]
    if (path / "lease").exists():
        found.append(str(path / "lease"))
    return found


def assert_identical_store(reference: Path, path: Path) -> dict[str, int]:
    """`path` holds exactly what an uninterrupted run wrote to `reference`; returns counts."""
    a, b = FeatureStore.open(str(reference)), FeatureStore.open(str(path))
    assert not debris(path), debris(path)
    done = b.complete_ids()
    assert done == a.complete_ids()
    # no orphaned or half-written groups: every folder under videos/ is a complete video
    assert {p.name for p in (path / "videos").iterdir() if p.is_dir()} == {video_key(v) for v in done}
    for video_id in sorted(done):
        ga, gb = a.video_group(video_id), b.video_group(video_id)
        assert dict(ga.attrs) == dict(gb.attrs), video_id
        assert sorted(ga.array_keys()) == sorted(gb.array_keys()), video_id
        for name in ga.array_keys():
            x, y = ga[name][...], gb[name][...]
            assert x.dtype == y.dtype and x.shape == y.shape, (video_id, name)
            assert np.array_equal(x, y), f"{video_id}/{name} differs"  # bit-identical
    # index and failures: consolidated, equal to the reference, and true to the groups
    assert b.root["index"].attrs.get("complete") is True
    ia, ib = a.index(), b.index()
    for name in ia:
        assert list(ia[name]) == list(ib[name]), name
    scan = b._scan_index()
    for name in scan:
        assert list(scan[name]) == list(ib[name]), name
    fa, fb = a.failures(), b.failures()
    assert [(f.video_id, f.stage, f.error, f.attempts) for f in fa] == [
        (f.video_id, f.stage, f.error, f.attempts) for f in fb]
    failed = {f.video_id for f in fb}
    assert not failed & done
    assert sorted(failed) == sorted(str(v) for v in ib["video_id"][ib["status"] == "failed"])
    assert list(b.root["index"].attrs["failures"]) == list(a.root["index"].attrs["failures"])
    meta_a, meta_b = a.meta, b.meta
    meta_a.pop("created"), meta_b.pop("created")
    assert meta_a == meta_b
    # the pack: complete, of exactly the complete videos, equal to the reference's
    from pipeline.store.pack import open_pack, pack_is_fresh

    pa, pb = open_pack(a, "rgb"), open_pack(b, "rgb")
    assert pb is not None and pack_is_fresh(b, "rgb")
    assert list(pa.keys) == list(pb.keys) and np.array_equal(pa.offsets, pb.offsets)
    assert np.array_equal(pa.frames[...], pb.frames[...])
    return {"complete": len(done), "failed": len(failed)}


def assert_readable(path: Path) -> dict[str, int]:
    """A killed run's store still opens and summarises (DESIGN: the store stays readable)."""
    from pipeline.store import summarize

    if not (path / "zarr.json").exists():
        return {"complete": 0}
    store = FeatureStore.open(str(path))
    summary = summarize(store)
    for video_id, _ in store.iter_complete():
        store.read(video_id, "rgb")  # every video marked complete is whole
    return {"complete": summary["complete"], "incomplete": summary["incomplete"], "failed": summary["failed"]}


def demo_subset(out: Path, ids: list[str], *, missing: list[str] = ()) -> Path:
    """A manifest of some demo videos (`out` from demo_data.generate), plus entries whose file is missing."""
    lines = (out / "manifest.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if line.split(",")[0] in ids]
    keep += [f"{vid},videos/{vid}.mp4,moving left,train" for vid in missing]
    manifest = out / f"subset-{len(ids)}-{len(missing)}.csv"
    manifest.write_text("\n".join([lines[0], *keep]) + "\n")
    (out / f"{manifest.stem}.classes.txt").write_text((out / "manifest.classes.txt").read_text())
    return manifest


# ---- a small file system that fills up ------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only); the test is skipped where mounting is refused."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def disk_bytes(path: Path) -> int:
    """What the file `path`, or the files under it, take on a tmpfs (whole 4 KiB pages)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in files)


def leave_free(disk: Path, free: int) -> Path:
    """Fill `disk` until about `free` bytes stay free; returns the filler (delete it to make room)."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\1" * max(0, stat.f_bavail * stat.f_frsize - free))
    return filler


def error_lines(output: str) -> list[str]:
    """The lines of a run's output that report an error (a traceback counts)."""
    return [line for line in output.splitlines() if "error" in line.lower() or line.startswith("Traceback")]
