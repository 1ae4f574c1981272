"""Features too large for the memory budget: read from Zarr batch by batch, prefetched in the background.

`ZarrFeatures.gather` has the same contract as `MemoryFeatures.gather` and takes the same
`BatchPlan`s, so a streamed run draws the same samples as an in-memory one. Each sample reads the
time range its segments span (a typical video is one chunk per view) on a small thread pool, and
`iterate_batches` keeps a few batches ready in a background thread while the head trains.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from pipeline.store import FeatureStore
from pipeline.training.batches import BatchPlan, Standardizer, segment_indices
from pipeline.training.data import SplitData, read_video

PREFETCH_BATCHES = 3
READ_THREADS = 4


class ZarrFeatures:
    prefetch = True  # batches are fresh arrays, safe to build ahead of use

    def __init__(self, split: SplitData, *, device: torch.device, num_segments: int,
                 standardizers: dict[str, Standardizer] | None = None, threads: int = READ_THREADS):
        store = FeatureStore.open(split.store_url, storage_options=split.storage_options or None)
        self.videos_group = store.root["videos"]
        self.split = split
        self.device = device
        self.num_segments = num_segments
        self.labels = torch.as_tensor(split.labels)
        self.standardizers = standardizers or {}
        self.pool = ThreadPoolExecutor(threads)

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, plan: BatchPlan, view: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        videos = plan.videos
        out = {}
        for name, data in self.split.streams.items():
            idx = segment_indices(torch.as_tensor(data.lengths)[videos], self.num_segments, plan.positions).numpy()
            if plan.view_draw is not None:
                views = (plan.view_draw * data.views).long().clamp(max=data.views - 1).numpy()
            else:
                views = np.full(len(videos), view % data.views)
            batch = np.empty((len(videos), self.num_segments, *data.frame_shape), dtype=np.float16)
            keys = self.split.keys[videos.numpy()]

            def read(i: int, data=data, idx=idx, views=views, keys=keys, batch=batch) -> None:
                lo, hi = int(idx[i].min()), int(idx[i].max()) + 1
                block = read_video(self.videos_group, str(keys[i]), data, view=int(views[i]), time=slice(lo, hi))
                batch[i] = block[idx[i] - lo]

            list(self.pool.map(read, range(len(videos))))
            x = torch.from_numpy(batch).to(self.device, non_blocking=True).float()
            if name in self.standardizers:
                x = self.standardizers[name](x)
            out[name] = x
        return out, self.labels[videos].to(self.device)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def iterate_batches(source, plans: Sequence[BatchPlan], views: Sequence[int] = (0,)) -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield `source.gather(plan, view)` for each plan and each view (views vary fastest).

    Sources with `prefetch` gather ahead in a background thread; the others gather on demand (their
    batches share buffers, so each must be used before the next is drawn), through their own
    `iterate` when they have one.
    """
    if not getattr(source, "prefetch", False) and hasattr(source, "iterate"):
        yield from source.iterate(plans, views)
        return
    work = [(plan, view) for plan in plans for view in views]
    if not getattr(source, "prefetch", False):
        for plan, view in work:
            yield source.gather(plan, view)
        return
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def produce() -> None:
        try:
            for plan, view in work:
                if stop.is_set():
                    return
                ready.put(("batch", source.gather(plan, view)))
            ready.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            ready.put(("error", exc))

    thread = threading.Thread(target=produce, name="stpipe-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
