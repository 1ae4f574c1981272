"""Several videos written at once, each by one thread from its first write to its last.

On an object store every document is a request with a round trip (~5-50 ms); one video after
another, a writer waits on those round trips and falls behind the device (a GPU extracting 5,000
frames/s needs ~140 Jester videos/s). `WritePool` keeps up to `threads` videos in flight. Each
video's writes stay in one task, in order (begin, arrays, finish with `complete` last), so every
group still has exactly one writer and the kill -9 guarantees of RELIABILITY.md hold unchanged. On
a local disk writes are a few file creations each and run inline (threads only contend there).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

REMOTE_THREADS = 16


def write_threads(store) -> int:
    return 1 if store.io.local else REMOTE_THREADS


class WritePool:
    """`submit(fn, *args)` runs `fn` (one video's writes) on a pool; `done` callbacks and errors
    surface on the submitting thread, in completion order, as later submits and `close` drain."""

    def __init__(self, threads: int, on_done: Callable[[Any], None] | None = None):
        self.threads = max(1, threads)
        self.on_done = on_done or (lambda result: None)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="stpipe-store-writer") if self.threads > 1 else None
        self._pending: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            self.on_done(fn(*args))
            return
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) >= 2 * self.threads or (self._pending and self._pending[0].done()):
            self.on_done(self._pending.popleft().result())  # re-raises a writer's error here

    def close(self) -> None:
        try:
            while self._pending:
                self.on_done(self._pending.popleft().result())
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WritePool:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # an error: wait for the writes in flight, drop the rest, keep the error
            for future in self._pending:
                future.cancel()
            self._pending.clear()
        self.close()
