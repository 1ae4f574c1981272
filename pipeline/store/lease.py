"""One writing run per store: a lease that a second `stpipe extract` on the same store respects.

Two runs writing one store would redo each other's videos and race on the index, so the second
is refused with one line naming the holder. (Per-video claims would let them cooperate, at the
cost of a claim object per video and a protocol every writer, including Ray workers, must follow;
a refusal is simpler and a second run has nothing to add that the first is not already doing.)

The lease is `<store>/lease/zarr.json`, shaped as a zarr group so zarr tools list it without
warnings; its attrs["stpipe_lease"] hold host, pid, the pid's start time, start and heartbeat
times and a random token. A thread renews the heartbeat every HEARTBEAT seconds. A lease is
stale, and the next run takes it over, when its holder is gone: on the same host, the pid no
longer runs (or now belongs to another process: start times differ; or is a zombie), elsewhere
its heartbeat is older than STALE_AFTER. A `kill -9`ed run therefore never locks a store for long.

Taking a lease is atomic on local disks (a hard link fails if the file exists); on object stores
it is create-if-absent followed by a read-back, which two runs started in the same instant could
both pass: start one run per store there.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import StoreError
from pipeline.store.urls import is_local, local_path, resolve_url

LEASE_KEY = "lease/zarr.json"
HEARTBEAT = 30.0  # seconds between renewals
STALE_AFTER = 300.0  # a holder on another host is gone after this long without a heartbeat


class StoreLease:
    """`with StoreLease(url): ...` holds the store for one writing run (see the module docstring)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, *,
                 heartbeat: float = HEARTBEAT, stale_after: float = STALE_AFTER):
        self.url, self.heartbeat, self.stale_after = url, heartbeat, stale_after
        self.token = secrets.token_hex(8)
        self.taken_over: dict[str, Any] | None = None  # the stale holder this run replaced, if any
        self.lost = False
        self._io = _LocalIO(url) if is_local(url) else _FsspecIO(url, storage_options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking and giving back ---------------------------------------------------------------

    def acquire(self) -> StoreLease:
        for _ in range(3):
            if self._io.create(self._payload(started=time.time())) and self._holder() == self.token:
                self._thread = threading.Thread(target=self._renew, name="stpipe-lease", daemon=True)
                self._thread.start()
                return self
            holder = self._io.read()
            if holder is None:
                continue  # released in between: try again
            if self._alive(holder):
                raise StoreError(f"{self.url}: in use by another stpipe run ({_who(holder)}); wait for it to "
                                 "finish (a crashed run's lease is taken over automatically)")
            if self._io.read() == holder:  # still the stale one: take it over
                self._io.delete()
                self.taken_over = holder
        raise StoreError(f"{self.url}: could not take the store's lease (other runs keep taking it)")

    def check(self) -> None:
        """Raise if this run no longer holds the lease; put it back if a delete (--overwrite) removed it."""
        holder = self._io.read()
        if holder is None and self._io.create(self._payload(started=time.time())):
            holder = self._io.read()
        if self.lost or holder is None or holder.get("token") != self.token:
            self.lost = True
            raise StoreError(f"{self.url}: another run took over this store's lease"
                             + (f" ({_who(holder)})" if holder else ""))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._holder() == self.token:
            self._io.delete()

    def __enter__(self) -> StoreLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.release()
            return
        try:
            self.release()
        except Exception:  # noqa: BLE001 - the run's error is the one to report (a lost bucket fails both);
            pass  # a lease left behind is stale once this process ends

    # ---- internals -----------------------------------------------------------------------------

    def _payload(self, *, started: float) -> bytes:
        pid = os.getpid()
        lease = {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid), "token": self.token,
                 "started": started, "heartbeat": time.time()}
        return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"stpipe_lease": lease}}).encode()

    def _holder(self) -> str | None:
        holder = self._io.read()
        return holder.get("token") if holder else None

    def _renew(self) -> None:
        started = time.time()
        while not self._stop.wait(self.heartbeat):
            try:
                holder = self._io.read()
                if holder is not None and holder.get("token") != self.token:
                    self.lost = True  # someone judged us stale; `check` reports it
                    return
                started = holder.get("started", started) if holder else started
                self._io.write(self._payload(started=started))
            except Exception:  # noqa: BLE001 - s3fs/botocore errors too; a missed heartbeat is harmless,
                pass  # the next one retries, and the run's own writes report a store that stays unreachable

    def _alive(self, holder: Mapping[str, Any]) -> bool:
        if not holder.get("token"):
            return False  # unreadable: whoever wrote it did not finish
        if holder.get("host") == socket.gethostname():
            return _process_alive(int(holder.get("pid", -1)), holder.get("pid_start"))
        return time.time() - float(holder.get("heartbeat", 0)) < self.stale_after


def _who(holder: Mapping[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {since}"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the command name may hold spaces


def _process_alive(pid: int, start: str | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return True  # no /proc (macOS): the pid exists
    if fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped
    return start is None or fields[19] == start


def _parse(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        return dict(json.loads(data)["attributes"]["stpipe_lease"])
    except (ValueError, KeyError, TypeError):
        return {}  # present but unreadable


class _LocalIO:
    """Lease file on a local disk: exclusive create by hard link, replace by rename."""

    def __init__(self, url: str):
        self.path = Path(local_path(url)) / LEASE_KEY
        root = self.path.parent.parent
        # folders the lease itself will create: removed again on release if nothing else came to live
        # there (a run refused for a bad manifest leaves no empty store folder behind)
        self.made = []
        for folder in (root, *root.parents):
            if folder.exists():
                break
            self.made.append(folder)

    def create(self, data: bytes) -> bool:
        tmp = self._tmp(data)
        try:
            self.path.parent.mkdir(exist_ok=True)
            os.link(tmp, self.path)
            return True
        except (FileExistsError, FileNotFoundError):  # held, or its folder went away under us: ask again
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        os.replace(self._tmp(data), self.path)

    def read(self) -> dict[str, Any] | None:
        try:
            return _parse(self.path.read_bytes())
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        for folder in (self.path.parent, *self.made):
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break  # not empty: a store lives here now

    def _tmp(self, data: bytes) -> Path:
        # in the store root, named like zarr's own temp files: `FeatureStore.remove_debris` sweeps a
        # kill's leftovers, and the lease folder holds nothing but the lease
        root = self.path.parent.parent
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f"lease.{secrets.token_hex(16)}.partial"
        tmp.write_bytes(data)
        return tmp


class _FsspecIO:
    """Lease object on an fsspec filesystem: create-if-absent, then the caller reads it back."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None):
        import fsspec

        url, options = resolve_url(url, storage_options, creating=True)  # one-line errors, in seconds
        self.fs, root = fsspec.url_to_fs(url, **(options or {}))
        self.path = f"{root.rstrip('/')}/{LEASE_KEY}"

    def create(self, data: bytes) -> bool:
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, data)
        return True

    def write(self, data: bytes) -> None:
        self.fs.pipe_file(self.path, data)

    def read(self) -> dict[str, Any] | None:
        try:
            return _parse(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass
