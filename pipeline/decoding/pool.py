"""Where decoding runs: decoder processes feeding a shared-memory ring, or threads.

Both pools take jobs (`submit`) and hand back `(job, record)` pairs (`poll`), the records of one
video in order. A job is any object with `path`, `start` and `end` (stage one's `VideoJob`).

**Processes** (`ProcessDecoders`): each decoder is a fresh interpreter running
`pipeline.decoding.worker` (spawned, never forked: the compute process has torch's threads;
and not through multiprocessing's spawn, which would re-import the parent's `__main__` -
`stpipe`, hence torch - in every decoder). It owns K slots of one shared-memory block, writes a
chunk's crops (and fields) into a free slot and sends only a small header down its own pipe; the
compute process copies the chunk out and hands the slot back. Memory is the ring
(processes x K x slot), whatever the videos' lengths. A decoder that dies (its pipe closes) or
sends nothing for `timeout` seconds while it holds a video is killed and replaced, and its video
comes back as `Failed` - one pipe per decoder, so a death corrupts nothing shared.

**Threads** (`ThreadDecoders`): the same `decode_video` in threads of the compute process, chunks
handed over by reference through a bounded queue. Cheaper to start (no interpreter, no flow method
per process) where there is one core or a handful of frames; GIL-bound beyond ~4 threads.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import connection, shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.decoding.core import (
    DecodeSpec,
    Ended,
    Failed,
    Frames,
    OwnBuffers,
    Task,
    decode_video,
    failure,
)

SLOTS_PER_PROCESS = 2  # one being filled while the compute process copies the other out
MAX_SLOT_BYTES = 64 << 20
SHM_PREFIX = "stpipe_dec_"


class DecoderThreads:
    """Decoder threads of this process: jobs in through one queue, (job, record) pairs out through one
    bounded queue (what bounds the frames waiting, in memory or on a device). Subclasses give `_loop`."""

    def _start_threads(self, workers: int, name: str) -> None:
        self.workers = max(1, workers)
        self._todo: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue(maxsize=max(2, 2 * self.workers))
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True, name=f"{name}-{i}")
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def _take(self, timeout: float) -> list[tuple[Any, Any]]:
        """Up to 16 pairs: waits up to `timeout` s for the first."""
        out: list[tuple[Any, Any]] = []
        try:
            out.append(self._out.get(timeout=max(timeout, 0.0)))
            while len(out) < 16:
                out.append(self._out.get_nowait())
        except queue.Empty:
            pass
        return out

    def _stop_threads(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._todo.put(None)
        while True:  # unblock threads waiting on a full queue
            try:
                self._out.get_nowait()
            except queue.Empty:
                break

    def _loop(self) -> None:
        raise NotImplementedError


class ThreadDecoders(DecoderThreads):
    """`threads` decoder threads of this process; `flow` makes each thread's own FlowStream (or None)."""

    kind = "threads"

    def __init__(self, spec: DecodeSpec, threads: int, flow: Callable[[], Any] | None = None):
        self.spec = spec
        self._flow = flow
        self._start_threads(threads, "stpipe-decode")

    def describe(self) -> str:
        return f"decoding in {self.workers} thread(s) of the compute process"

    def submit(self, job) -> None:
        self._todo.put(job)

    def poll(self, timeout: float) -> list[tuple[Any, Any]]:
        return self._take(timeout)

    def pending(self) -> bool:
        return not self._out.empty()

    def close(self) -> None:
        self._stop_threads()

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(1)  # the compute thread owns the cores
        flow = self._flow() if self._flow is not None else None
        buffers = OwnBuffers()
        while not self._stop.is_set():
            job = self._todo.get()
            if job is None:
                return
            try:
                for record in decode_video(Task(job.path, job.start, job.end), self.spec, buffers, flow):
                    self._out.put((job, record))
                    if self._stop.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - one bad video must never stop the run
                self._out.put((job, failure(exc)))


@dataclass
class _Decoder:
    index: int
    process: subprocess.Popen
    conn: connection.Connection
    slots: list[int]
    job: Any = None
    last: float = 0.0  # when it last sent something (or took its job)


class ProcessDecoders:
    """`processes` decoder processes writing into a ring of `processes x slots` shared-memory slots."""

    kind = "processes"

    def __init__(self, spec: DecodeSpec, processes: int, *, flow: dict | None = None, timeout: float = 300.0,
                 slot_bytes: int = 0, slots: int = SLOTS_PER_PROCESS):
        # one FFmpeg thread per decoder: the processes already use every core, and threads of one
        # process would only contend for its core
        spec = replace(spec, ffmpeg_threads=spec.ffmpeg_threads or 1)
        self.spec, self.workers, self.timeout, self.flow = spec, max(1, processes), timeout, flow
        self.slot_bytes = slot_bytes or default_slot_bytes(spec)
        self.slots = slots
        sweep_stale_segments()
        self.shm = shared_memory.SharedMemory(create=True, size=self.workers * slots * self.slot_bytes,
                                              name=f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}")
        self.memory = np.ndarray((self.shm.size,), dtype=np.uint8, buffer=self.shm.buf)
        self._queue: deque = deque()
        self._decoders = [self._start(i) for i in range(self.workers)]

    def describe(self) -> str:
        return (f"decoding in {self.workers} process(es), a shared-memory ring of {self.workers * self.slots} "
                f"x {self.slot_bytes / 2**20:.1f} MiB slots")

    # ---- jobs in, records out ----------------------------------------------------------------

    def submit(self, job) -> None:
        self._queue.append(job)
        self._dispatch()

    def pending(self) -> bool:
        return False

    def poll(self, timeout: float) -> list[tuple[Any, Any]]:
        self._dispatch()
        busy = [d for d in self._decoders if d.job is not None]
        out: list[tuple[Any, Any]] = []
        if not busy:
            time.sleep(min(timeout, 0.01))
            return out
        ready = connection.wait([d.conn for d in busy], timeout=timeout)
        now = time.monotonic()
        for decoder in busy:
            if decoder.conn in ready:
                try:
                    record = decoder.conn.recv()
                except (EOFError, OSError):
                    out.append(self._replace(decoder, f"decoder process died ({_exit_reason(decoder.process)})",
                                             retry=True))
                    continue
                decoder.last = now
                job = decoder.job
                if isinstance(record, Frames):  # copied out at once, so the slot goes straight back
                    slot, start = record.slot, record.slot * self.slot_bytes
                    record = record.from_memory(self.memory[start : start + self.slot_bytes])
                    self._send(decoder, ("free", slot))
                elif isinstance(record, (Ended, Failed)):
                    decoder.job = None
                out.append((job, record))
            elif now - decoder.last > self.timeout:
                out.append(self._replace(decoder, f"decoding stalled: nothing decoded for {self.timeout:.0f} s "
                                                  "(decoder process killed)", retry=False))
        self._dispatch()
        return out

    def close(self) -> None:
        for decoder in self._decoders:
            try:
                decoder.conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for decoder in self._decoders:
            try:
                decoder.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                decoder.process.kill()
                decoder.process.wait()
            decoder.conn.close()
        self.memory = None
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass

    # ---- decoder processes -------------------------------------------------------------------

    def _start(self, index: int) -> _Decoder:
        parent, child = connection.Pipe(duplex=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_root(), os.environ.get("PYTHONPATH")]))}
        process = subprocess.Popen([sys.executable, "-m", "pipeline.decoding.worker", str(child.fileno())],
                                   pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        child.close()
        slots = list(range(index * self.slots, (index + 1) * self.slots))
        parent.send({"shm": self.shm.name, "size": self.shm.size, "slot_bytes": self.slot_bytes, "slots": slots,
                     "spec": self.spec, "flow": self.flow})
        return _Decoder(index, process, parent, slots)

    def _replace(self, decoder: _Decoder, reason: str, *, retry: bool) -> tuple[Any, Failed]:
        """Kill a dead or stalled decoder, start another in its place (same slots); its video fails."""
        job = decoder.job
        try:
            decoder.process.kill()
        except OSError:
            pass
        decoder.process.wait()
        decoder.conn.close()
        self._decoders[decoder.index] = self._start(decoder.index)
        return job, Failed(reason, retry)

    def _dispatch(self) -> None:
        for decoder in self._decoders:
            if decoder.job is None and self._queue:
                job = self._queue.popleft()
                decoder.job, decoder.last = job, time.monotonic()
                self._send(decoder, ("job", Task(job.path, job.start, job.end)))

    def _send(self, decoder: _Decoder, message) -> None:
        try:
            decoder.conn.send(message)
        except OSError:
            pass  # dead: its pipe reads EOF next and the decoder is replaced there


def default_slot_bytes(spec: DecodeSpec) -> int:
    """A chunk of crops plus the fields of a 16:9 video at the flow size, within MAX_SLOT_BYTES."""
    per_frame = spec.crop_bytes()
    if spec.flow_short_side:
        per_frame += 2 * spec.flow_short_side * (spec.flow_short_side * 16 // 9 + 2) * spec.flow_itemsize
    return int(min(MAX_SLOT_BYTES, max(per_frame + 64, spec.chunk_frames * per_frame + 64)))


def sweep_stale_segments() -> None:
    """Unlink rings a killed run left in /dev/shm (its pid is gone). Python's resource tracker
    usually does this when the run dies; this covers a tracker killed with it."""
    folder = Path("/dev/shm")
    if not folder.is_dir():
        return
    for path in folder.glob(f"{SHM_PREFIX}*"):
        try:
            pid = int(path.name[len(SHM_PREFIX):].split("_")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue


def _root() -> str:
    import pipeline

    return str(Path(pipeline.__file__).resolve().parent.parent)


def _exit_reason(process: subprocess.Popen) -> str:
    try:
        code = process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return "pipe closed"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
