"""A video's feature arrays on their way to the store, a whole time-chunk at a time.

Everything that touches the store goes through the store's `Writer` (a video's `begin_video`, its
arrays' chunks, `finish`, failure records), so a video's writes happen in the order they were
made and the compute thread never waits on storage. Feature arrays are written a whole time-chunk
at a time as they fill (`TimeBuffer`), so memory stays bounded however long a video is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.faults import fault_point
from pipeline.store import time_chunk


class VideoOutput:
    """A video's `VideoWriter` (`FeatureStore.begin_video`), made and used in the writer thread."""

    def __init__(self) -> None:
        self.writer: Any = None


class TimeBuffer:
    """Collects `(view, time, ...)` rows of one array and writes them a whole time-chunk at a time.

    Arrays whose dims do not start with `view` (flow) take rows `(1, time, ...)` and store `(time, ...)`.
    All store access happens in the writer thread (`submit`), in order.
    """

    def __init__(self, output: VideoOutput, submit, name: str, views: int, length: int, dims, dtype, attrs=None):
        self.output, self.submit, self.name = output, submit, name
        self.views, self.length, self.dims, self.dtype, self.attrs = views, length, dims, dtype, attrs
        self.has_view = dims[0] == "view"
        self.array = None
        self.buf: np.ndarray | None = None
        self.t0 = 0  # first time index held in buf
        self.filled = 0  # rows written into buf (contiguous from t0)
        self.chunk = 0

    def put(self, view_rows: np.ndarray) -> None:
        """Append rows `(views, n, *frame_shape)`; flushes each full chunk to the store."""
        if self.buf is None:
            frame_shape = view_rows.shape[2:]
            self.chunk = time_chunk(frame_shape, np.dtype(self.dtype).itemsize, max(1, self.length))
            shape = (self.views, self.length, *frame_shape) if self.has_view else (self.length, *frame_shape)
            self.submit(self._create, shape)
            self.buf = np.zeros((self.views, self.chunk, *frame_shape), dtype=self.dtype)
        n, done = view_rows.shape[1], 0
        while done < n:
            take = min(n - done, self.chunk - self.filled)
            self.buf[:, self.filled : self.filled + take] = view_rows[:, done : done + take]
            self.filled += take
            done += take
            if self.filled == self.chunk:
                self.flush()

    def flush(self) -> None:
        if self.buf is None or self.filled == 0:
            return
        rows, t0 = self.buf[:, : self.filled].copy(), self.t0
        self.submit(self._write, t0, rows)
        self.t0 += self.filled
        self.filled = 0

    def close(self, length: int) -> None:
        """Flush the tail and shrink the array when the video ended early."""
        self.flush()
        if self.buf is not None and length != self.length:
            self.submit(self._resize, length)

    def _create(self, shape):
        self.array = self.output.writer.create(self.name, shape=shape, dtype=self.dtype, dims=self.dims,
                                               time_axis=1 if self.has_view else 0, attrs=self.attrs)

    def _write(self, t0, rows):
        if self.has_view:
            self.array[:, t0 : t0 + rows.shape[1]] = rows
        else:
            self.array[t0 : t0 + rows.shape[1]] = rows[0]
        fault_point("write")

    def _resize(self, length):
        shape = list(self.array.shape)
        shape[1 if self.has_view else 0] = length
        self.array.resize(tuple(shape))
