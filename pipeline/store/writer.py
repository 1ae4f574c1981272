"""The one writer of extract and import: store writes off the caller's thread, each video's in order.

On an object store every document is a request with a round trip (~5-50 ms); one video after
another, a writer waits on those round trips and falls behind the device (a GPU extracting 5,000
frames/s needs ~140 Jester videos/s). So `Writer` has lanes, one thread each: every write of one
video carries its id as `key` and goes to the same lane, in submission order, so each video group
still has exactly one writer and `complete` is still its last write (the kill -9 guarantees of
RELIABILITY.md hold unchanged); different videos write in parallel. A write without a key (one
that holds a whole video, as import's) goes to the next lane. On a local disk a write is a few file
creations and one lane is enough; an import, whose work is all Python, writes there on its own thread
(`lanes=0`): a lane's thread would only trade the GIL with it (~44 futex calls a video).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

REMOTE_THREADS = 16
_SKIPPED = object()


def write_threads(store, *, inline_local: bool = False) -> int:
    """Lanes for `store`: object stores many; a local disk one, or none (`inline_local`: the caller's thread)."""
    return REMOTE_THREADS if not store.io.local else 0 if inline_local else 1


class Writer:
    """`submit(fn, *args, key=video_id)` queues one write; a write's error (a full disk, a lost bucket)
    is raised in the caller by a later `submit`, `check` or `close`, and nothing queued behind it runs.

    `on_done` receives each write's result on the caller's thread; with `in_flight`, `submit` waits
    for the oldest write while more than that many per lane are queued (writes that hold a whole video)."""

    def __init__(self, lanes: int = 1, *, on_done: Callable[[Any], None] | None = None, in_flight: int = 0) -> None:
        self._lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stpipe-writer-{i}")
                       for i in range(lanes)]
        self._next_lane = itertools.cycle(self._lanes)
        self._on_done = on_done
        self._in_flight = in_flight * len(self._lanes)
        self._futures: deque[Future] = deque()
        self._failed = threading.Event()

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None, **kwargs: Any) -> None:
        if not self._lanes:  # lanes=0: on the caller's thread
            result = self._guarded(fn, args, kwargs)
            if self._on_done is not None:
                self._on_done(result)
            return
        lane = next(self._next_lane) if key is None else self._lanes[zlib.crc32(key.encode()) % len(self._lanes)]
        self._futures.append(lane.submit(self._guarded, fn, args, kwargs))
        self.check()
        while self._in_flight and len(self._futures) > self._in_flight:
            self._settle()

    def _guarded(self, fn, args, kwargs) -> Any:
        # after a failed write (a full disk) nothing queued behind it runs: above all not the `finish`
        # that would mark a video complete whose chunk was never written
        if self._failed.is_set():
            return _SKIPPED
        try:
            return fn(*args, **kwargs)
        except BaseException:
            self._failed.set()
            raise

    def _settle(self) -> None:
        result = self._futures[0].result()  # the oldest write's error is raised here (and again by `close`)
        self._futures.popleft()
        if self._on_done is not None and result is not _SKIPPED:
            self._on_done(result)

    def check(self) -> None:
        """Deliver the writes finished so far, oldest first; the first error is raised."""
        while self._futures and self._futures[0].done():
            self._settle()

    def close(self) -> None:
        """Wait for every write; the first error is raised."""
        try:
            while self._futures:
                self._settle()
        finally:
            for lane in self._lanes:
                lane.shutdown(wait=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
            return
        self._failed.set()  # the caller's error: writes not started yet are dropped, that error is kept
        with contextlib.suppress(Exception):
            self.close()
