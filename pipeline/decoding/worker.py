"""A decoder process: `python -m pipeline.decoding.worker FD` (started by `ProcessDecoders`).

FD is its end of a duplex pipe to the compute process. First message: the ring (shared-memory
name and size, slot size, this decoder's slots), the `DecodeSpec`, and the flow method to build
(or None). Then: ("job", Task) -> the video's records, Frames going through a free slot;
("free", slot) -> the compute process is done with that slot; ("stop",) -> exit. The pipe's end
(the compute process died, even by kill -9) ends this process too.
"""

from __future__ import annotations

import mmap
import sys
from multiprocessing.connection import Connection

import numpy as np


class SlotBuffers:
    """This decoder's slots of the ring; `acquire` waits on the pipe for a slot handed back."""

    def __init__(self, conn: Connection, memory: np.ndarray, slot_bytes: int, slots: list[int]):
        self.conn, self.memory, self.capacity = conn, memory, slot_bytes
        self.free = list(slots)
        self.filling: set[int] = set()  # acquired, not yet handed to the compute process

    def acquire(self, nbytes: int) -> tuple[int, np.ndarray]:
        while not self.free:
            handle(self, self.conn.recv())
        slot = self.free.pop(0)
        self.filling.add(slot)
        start = slot * self.capacity
        return slot, self.memory[start : start + self.capacity]

    def sent(self, slot: int) -> None:
        self.filling.discard(slot)  # the compute process owns it until its "free"

    def reclaim(self) -> None:
        """A video failed while a chunk was being filled: that slot was never sent, so no "free" will
        come back for it; without this, each such video would cost the decoder a slot until it waits
        forever for one."""
        self.free.extend(sorted(self.filling))
        self.filling.clear()


def handle(buffers: SlotBuffers, message) -> None:
    if message[0] == "free":
        buffers.free.append(message[1])
    elif message[0] == "stop":
        raise SystemExit(0)
    else:
        raise RuntimeError(f"decoder: unexpected message {message[0]!r} while decoding")


def open_ring(name: str, size: int) -> np.ndarray:
    """The ring, mapped without `SharedMemory` (whose resource tracker would unlink the segment when
    this process exits, under the compute process's feet; Python < 3.13)."""
    import _posixshmem
    import os

    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    try:
        return np.frombuffer(mmap.mmap(fd, size), dtype=np.uint8)
    finally:
        os.close(fd)


def main(fd: int) -> None:
    from pipeline.decoding.core import Task, decode_fault, decode_video, failure

    conn = Connection(fd)
    setup = conn.recv()
    buffers = SlotBuffers(conn, open_ring(setup["shm"], setup["size"]), setup["slot_bytes"], setup["slots"])
    spec, flow = setup["spec"], None
    if setup["flow"] is not None:
        import torch

        from pipeline.decoding.flow import build_stream

        torch.set_num_threads(1)  # one core per decoder; the compute process has the rest
        flow = build_stream(**setup["flow"])
    while True:
        message = conn.recv()
        if message[0] != "job":
            handle(buffers, message)
            continue
        task: Task = message[1]
        decode_fault(task.path)
        try:
            for record in decode_video(task, spec, buffers, flow):
                conn.send(record.header() if hasattr(record, "header") else record)
                if getattr(record, "slot", None) is not None:
                    buffers.sent(record.slot)
        except Exception as exc:  # noqa: BLE001 - one bad video must never stop the decoder
            buffers.reclaim()
            conn.send(failure(exc))


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass  # the compute process is gone (or stopping): nothing left to decode for
