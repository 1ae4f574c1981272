"""The stage-one work unit: videos in, one complete store group per video out.

Three kinds of work overlap (DESIGN "hot paths"):
  decode threads  PyAV/folder decoding, resizing and view cropping to uint8 crops, and TV-L1 on the
                  frames they decoded (each thread its own flow method; C code, GIL released)
  this thread     the backbone on fixed-size batches that mix frames of several videos (and the
                  flow-stream backbone on stacked fields)
  a writer thread compression and Zarr writes, strictly in submission order per video
Queues between them are bounded, so memory stays bounded however long a video is; feature
arrays are written in whole time-chunks as they fill (see `TimeBuffer`).
Batches are always exactly `batch_size` frames (the tail is zero-padded), so a frame's features do
not depend on which other videos happened to share its batch: resumed runs are bit-identical.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.errors import StpipeError, VideoError
from pipeline.extraction.config import ExtractConfig
from pipeline.faults import fault_point
from pipeline.store import Failure, FeatureStore, VideoWriter, time_chunk
from pipeline.video import FrameSelection, iter_chunks, probe
from pipeline.views import make_views


@dataclass
class VideoJob:
    video_id: str
    path: str
    label: str | None
    label_index: int
    split: str
    start: float | None = None
    end: float | None = None
    attempts: int = 0


@dataclass
class Event:
    """Progress report: kind is `done` or `failed` (with `error`), `frames` decoded for the video."""

    kind: str
    video_id: str
    frames: int = 0
    error: str = ""


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    batches: int = 0  # backbone forwards of image backbones
    padded_rows: int = 0  # zero rows among them: compute spent on nothing


class TimeBuffer:
    """Collects `(view, time, ...)` rows of one array and writes them a whole time-chunk at a time.

    Arrays whose dims do not start with `view` (flow) take rows `(1, time, ...)` and store `(time, ...)`.
    All store access happens in the writer thread (`submit`), in order.
    """

    def __init__(self, state: _VideoState, submit, name: str, views: int, length: int, dims, dtype, attrs=None):
        self.state, self.submit, self.name = state, submit, name
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
        self.array = self.state.writer.create(self.name, shape=shape, dtype=self.dtype, dims=self.dims,
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


@dataclass
class _VideoState:
    job: VideoJob
    expected: int
    frame_index: list[int] = field(default_factory=list)
    writer: VideoWriter | None = None
    rgb: TimeBuffer | None = None
    flow: TimeBuffer | None = None
    flow_fields: list[torch.Tensor] = field(default_factory=list)  # for flow features: fields still needed
    flow_offset: int = 0  # index of the first field held in flow_fields
    flow_feat_t: int = 0  # next frame whose flow-stream features are due
    flow_feat: TimeBuffer | None = None
    clips: list[torch.Tensor] = field(default_factory=list)  # video backbones: uint8 crops
    fps: float = 0.0
    rows_pending: int = 0
    decoded: int = 0
    ended: bool = False
    failed: bool = False


class Extractor:
    """Holds the models for one worker and runs `process` over any list of videos."""

    def __init__(self, cfg: ExtractConfig, store: FeatureStore, *, device: torch.device, backbone,
                 flow_method=None, flow_backbone=None):
        self.cfg, self.store, self.device = cfg, store, device
        self.batch_size = cfg.batch_for(torch.device(device).type)
        self.backbone, self.flow_method, self.flow_backbone = backbone, flow_method, flow_backbone
        self.views = len(backbone.preprocess_views(torch.zeros(1, 8, 8, 3, dtype=torch.uint8), views=cfg.views))
        self.video_kind = backbone.kind == "video"
        resize = backbone.meta.get("resize_size") or [256]
        self.decode_short = max(int(min(resize)), cfg.flow_short_side if cfg.flow else 0)
        self._local = threading.local()  # per decode thread: its flow method
        # CUDA: batches go up from pinned memory without blocking, and a batch's features come back
        # while the next batch runs (one batch in flight), so the GPU does not wait on this thread
        self.pinned = torch.device(device).type == "cuda"
        self.in_flight = 1 if self.pinned else 0
        self._outputs: list[tuple[torch.Tensor, Any, list]] = []  # (features, copy-done event, owners)

    # ---- public ---------------------------------------------------------------------------

    def process(self, jobs: Iterable[VideoJob], progress: Callable[[Event], None] | None = None) -> Stats:
        started = time.perf_counter()
        stats = Stats()
        self._progress = progress or (lambda event: None)
        self._stats = stats
        todo: queue.Queue = queue.Queue()
        jobs = list(jobs)
        for job in jobs:
            todo.put(job)
        items: queue.Queue = queue.Queue(maxsize=max(2, 2 * self.cfg.decode_threads))
        self._pending: list[tuple[_VideoState, torch.Tensor]] = []
        self._states: dict[str, _VideoState] = {}
        self._remaining = len(jobs)
        self._todo = todo
        stop = threading.Event()
        decoders = [threading.Thread(target=self._decode_loop, args=(todo, items, stop), daemon=True)
                    for _ in range(max(1, min(self.cfg.decode_threads, len(jobs))))]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stpipe-writer") as writes:
            self._writes = writes
            self._write_futures: list[Future] = []
            for thread in decoders:
                thread.start()
            try:
                while self._remaining > 0:
                    try:
                        item = items.get(timeout=0.05)
                    except queue.Empty:
                        self._run_batch(force=self._drained())
                        self._scatter_outputs(keep=0)  # idle: no later batch to overlap with
                        self._check_writes()
                        continue
                    self._handle(item)
                    if items.empty():
                        self._run_batch(force=self._drained())
                self._run_batch(force=True)
            finally:
                stop.set()
                for _ in decoders:
                    todo.put(None)
                for future in self._write_futures:
                    future.result()
        stats.seconds = time.perf_counter() - started
        return stats

    # ---- decode threads -------------------------------------------------------------------

    def _decode_loop(self, todo: queue.Queue, items: queue.Queue, stop: threading.Event) -> None:
        torch.set_num_threads(1)  # the compute thread owns the cores
        while not stop.is_set():
            job = todo.get()
            if job is None:
                return
            try:
                info = probe(job.path, folder_fps=self.cfg.folder_fps)
                chunks = iter_chunks(job.path, start=job.start, end=job.end, select=self._selection(),
                                     short_side=self.decode_short, chunk_size=self.cfg.chunk_frames,
                                     folder_fps=self.cfg.folder_fps, info=info)
                first, last = True, None  # last: the previous chunk's last frame, for the first pair
                for chunk in chunks:
                    frames = torch.from_numpy(chunk.frames)
                    rgb = self._crops(frames)
                    fields = None
                    if self.cfg.flow:
                        fields, last = self._flow(last, self._flow_frames(frames))
                    if first:
                        items.put(("start", job, info, self._expected(info, job)))
                        first = False
                    items.put(("chunk", job, chunk.indices, rgb, fields))
                    if stop.is_set():
                        return
                items.put(("end", job, None))
            except Exception as exc:  # noqa: BLE001 - one bad video must never stop the run
                items.put(("error", job, exc))

    def _selection(self) -> FrameSelection:
        c = self.cfg
        return FrameSelection(mode=c.frames, step=c.frame_step, fps=c.frame_fps, num=c.frame_num, max_frames=c.max_frames)

    def _expected(self, info, job: VideoJob) -> int:
        from pipeline.video import _selected_indices, _trim_range

        first, stop = _trim_range(info, job.start, job.end)
        return len(_selected_indices(info, first, stop, self._selection()))

    def _crops(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (n, H, W, 3) -> uint8 views (V, n, C, crop, crop), not yet normalised.

        Normalising waits for the batch (`_normalize`): uint8 crops are a quarter of the float32
        ones in the queues (peak RSS) and on the way to the device.
        """
        pre = self.backbone.preprocessor
        return make_views(pre.resize(frames), views=self.cfg.views, size=pre.crop_size)

    def _normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """(..., C, h, w) uint8 -> the backbone's input; equals `preprocess_views` element by element."""
        return self.backbone.preprocessor.normalize(crops)

    def _flow(self, last: torch.Tensor | None, small: torch.Tensor) -> tuple[np.ndarray | None, torch.Tensor]:
        """Quantised TV-L1 fields from `last` through the chunk's frames, `flow_batch` pairs a call.

        Runs here, in the decode thread, with the thread's own flow method: videos get their flow
        in parallel (OpenCV's TV-L1 uses one core; ours runs one torch thread per decoder, no
        OpenMP barriers), while the compute thread runs the backbone. Returns (fields, new last).
        """
        from pipeline.flow import quantize_flow

        seq = small if last is None else torch.cat([last[None], small])
        if seq.shape[0] < 2:
            return None, small[-1]
        method, out = self._thread_flow(), []
        b = self.cfg.flow_batch_for(method.device.type)
        with self._thread_stream(method.device):
            seq = seq.to(method.device, non_blocking=True)
            for i in range(0, seq.shape[0] - 1, b):
                nxt = seq[i + 1 : i + b + 1]
                out.append(method.pairs(seq[i : i + nxt.shape[0]], nxt))
            # quantised where computed: on a GPU a quarter of the bytes cross to the host (uint8)
            q = quantize_flow(torch.cat(out), bound=self.cfg.flow_bound, dtype=self.cfg.flow_dtype)
            fields = q.cpu().numpy() if isinstance(q, torch.Tensor) else np.asarray(q)
        return fields, small[-1]

    def _thread_flow(self):
        """This thread's flow method: methods are not thread-safe (OpenCV's solver keeps buffers)."""
        method = getattr(self._local, "flow", None)
        if method is None:
            from pipeline.flow import build_flow

            base = self.flow_method
            options = {"compile": base.compile} if hasattr(base, "compile") else {}  # torch TV-L1 only
            method = build_flow(base.name, device=base.device, max_batch=base.max_batch, **options, **base.params)
            self._local.flow = method
        return method

    def _thread_stream(self, device: torch.device):
        """On CUDA, this decode thread's own stream: its copies and waits then wait for its own flow
        only, not for the backbone batches the compute thread queued on the default stream."""
        if torch.device(device).type != "cuda":
            return contextlib.nullcontext()
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(device)
        return torch.cuda.stream(stream)

    def _flow_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> uint8 (n, h, w, 3) with the shorter side at flow_short_side."""
        height, width = frames.shape[1:3]
        scale = self.cfg.flow_short_side / min(height, width)
        if abs(scale - 1.0) < 1e-6:
            return frames
        size = [max(2, round(height * scale)), max(2, round(width * scale))]
        x = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=size, mode="bilinear",
                                            antialias=scale < 1, align_corners=False)
        return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    # ---- compute thread -------------------------------------------------------------------

    def _handle(self, item) -> None:
        kind, job = item[0], item[1]
        state = self._states.get(job.video_id)
        if kind == "start":
            _, _, info, expected = item
            state = _VideoState(job, expected, fps=info.fps)
            self._states[job.video_id] = state
            self._begin(state)
        elif kind == "chunk":
            _, _, indices, rgb, fields = item
            if state is None or state.failed:
                return
            state.frame_index.extend(indices.tolist())
            state.decoded += len(indices)
            if self.video_kind:
                state.clips.append(rgb)
            else:
                state.rows_pending += rgb.shape[1]
                self._pending.append((state, rgb))
            if fields is not None:
                self._store_flow(state, fields)
            self._run_batch(force=False)
        elif kind == "end":
            if state is None:  # a video with no selected frames
                self._fail(job, VideoError(f"{job.path}: no frames selected"))
                return
            state.ended = True
            self._maybe_finish(state)
        elif kind == "error":
            if state is not None:
                state.failed = True
                self._states.pop(job.video_id, None)
            self._fail(job, item[2])

    def _begin(self, state: _VideoState) -> None:
        job, cfg = state.job, self.cfg
        attrs = {"path": job.path, "label": job.label, "label_index": job.label_index, "split": job.split,
                 "start": job.start, "end": job.end, "fps": state.fps}
        def begin():  # in the writer thread, after any writes still queued for an earlier attempt
            state.writer = self.store.begin_video(job.video_id, attrs)

        self._submit(begin)
        kind = self.backbone.meta.get("features", "pooled")
        feature_dims = ("channel",) if kind == "pooled" else ("channel", "y", "x")
        state.rgb = TimeBuffer(state, self._submit, "rgb", self.views, self._feature_length(state.expected),
                               ("view", "time", *feature_dims), np.float16)
        if cfg.flow:
            dtype = np.uint8 if cfg.flow_dtype == "uint8" else np.float16
            # not `attrs`: `begin` above reads that name later, in the writer thread
            flow_attrs = {"bound": cfg.flow_bound, "quantisation": cfg.flow_dtype, "method": cfg.flow_method}
            state.flow = TimeBuffer(state, self._submit, "flow", 1, max(0, state.expected - 1),
                                    ("time", "component", "y", "x"), dtype, flow_attrs)

    def _feature_length(self, frames: int) -> int:
        if not self.video_kind:
            return frames
        idx, _ = self.backbone.clip_index(max(1, frames))
        return len(idx)

    def _run_batch(self, force: bool) -> None:
        """Run the backbone on exactly batch_size rows (padding only when forced to drain)."""
        size = max(self.batch_size, self.views)
        while self._pending:
            rows = sum(x.shape[0] * x.shape[1] for _, x in self._pending)
            if rows < size and not force:
                return
            take, batch, owners = size, [], []
            while self._pending and take > 0:
                state, x = self._pending[0]
                views, n = x.shape[:2]
                k = min(n, max(1, take // views))
                if views * k > take and batch:
                    break
                batch.append(x[:, :k].flatten(0, 1))
                owners.append((state, views, k))
                if k == n:
                    self._pending.pop(0)
                else:
                    self._pending[0] = (state, x[:, k:])
                take -= views * k
            inputs = self._normalize(self._upload(batch))
            real = inputs.shape[0]
            if real < size:
                pad = inputs.new_zeros((size - real, *inputs.shape[1:]))
                inputs = torch.cat([inputs, pad])
            self._stats.batches += 1
            self._stats.padded_rows += size - real
            feats = self.backbone.forward_features(inputs)[:real]
            self._outputs.append(self._download(feats.to(torch.float16), owners))
            self._scatter_outputs(keep=self.in_flight)
        if force:
            self._scatter_outputs(keep=0)

    def _upload(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """Concatenated uint8 crops on the device; on CUDA through pinned memory, without blocking.

        The pinned block comes from torch's caching host allocator, which keeps it until the copy
        that reads it has finished, so it is safe to drop here.
        """
        if not self.pinned:
            return torch.cat(batch).to(self.device)
        rows = sum(x.shape[0] for x in batch)
        staging = torch.empty((rows, *batch[0].shape[1:]), dtype=batch[0].dtype, pin_memory=True)
        torch.cat(batch, out=staging)
        return staging.to(self.device, non_blocking=True)

    def _download(self, feats: torch.Tensor, owners: list) -> tuple[torch.Tensor, Any, list]:
        """Start copying a batch's float16 features to the host; the event says when they are there."""
        if not self.pinned:
            return feats.cpu(), None, owners
        host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
        host.copy_(feats, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done, owners

    def _scatter_outputs(self, keep: int) -> None:
        """Hand finished batches' features to their videos, oldest first, leaving `keep` in flight."""
        while len(self._outputs) > keep:
            host, done, owners = self._outputs.pop(0)
            if done is not None:
                done.synchronize()
            feats, offset = host.numpy(), 0
            for state, views, k in owners:
                part = feats[offset : offset + views * k].reshape(views, k, *feats.shape[1:])
                offset += views * k
                if state.failed:
                    continue
                state.rgb.put(part)
                state.rows_pending -= k
                self._maybe_finish(state)

    def _store_flow(self, state: _VideoState, q: np.ndarray) -> None:
        state.flow.put(q[None])
        if self.flow_backbone is not None:
            state.flow_fields.append(torch.from_numpy(q))
            self._flow_features(state, final=False)

    def _maybe_finish(self, state: _VideoState) -> None:
        if not state.ended or state.rows_pending > 0 or state.failed:
            return
        if self.video_kind:
            self._clip_features(state)
        if self.flow_backbone is not None:
            self._flow_features(state, final=True)
        n = state.decoded
        state.rgb.close(self._feature_length(n))
        if state.flow is not None:
            state.flow.close(max(0, n - 1))
        attrs = {"num_frames": n, "frame_index": state.frame_index}
        if self.video_kind:
            _, centres = self.backbone.clip_index(max(1, n))
            attrs["feature_frame_index"] = [state.frame_index[i] for i in centres.tolist()]
        self._submit(lambda: state.writer.finish(**attrs))
        self._submit(self.store.clear_failure, state.job.video_id)
        self._states.pop(state.job.video_id, None)
        self._remaining -= 1
        self._stats.done += 1
        self._stats.frames += n
        self._progress(Event("done", state.job.video_id, frames=n))

    def _clip_features(self, state: _VideoState) -> None:
        frames = torch.cat(state.clips, dim=1)  # (V, T, C, H, W)
        state.clips = []
        idx, _ = self.backbone.clip_index(frames.shape[1])
        per_batch = max(1, self.batch_size // max(1, idx.shape[1]))
        out = []
        for v in range(frames.shape[0]):
            feats = []
            for i in range(0, idx.shape[0], per_batch):
                clips = self.backbone.make_clips(frames[v], idx[i : i + per_batch]).to(self.device)
                clips = self._normalize(clips.transpose(1, 2)).transpose(1, 2)  # channels next to (h, w)
                feats.append(self.backbone.forward_features(clips).to("cpu", torch.float16))
            out.append(torch.cat(feats))
        state.rgb.put(torch.stack(out).numpy())

    def _flow_features(self, state: _VideoState, *, final: bool) -> None:
        """Flow-stream features of every frame whose stack of L fields is known, `step` frames a call.

        Runs as fields arrive and keeps only the fields later stacks still need, so memory stays
        bounded on long videos; the calls are the same as on the whole video at its end.
        """
        from pipeline.backbones.preprocess import stack_flow

        if not state.flow_fields:
            return
        fields = torch.cat(state.flow_fields) if len(state.flow_fields) > 1 else state.flow_fields[0]
        stack, step = self.cfg.flow_stack, max(1, self.batch_size // max(1, self.views))
        before, after = stack // 2, stack - 1 - stack // 2  # fields a stack takes before/after its frame
        available = state.flow_offset + fields.shape[0]
        while state.flow_feat_t < (state.decoded if final else available - after - step + 1):
            t = state.flow_feat_t
            frames = torch.arange(t, min(state.decoded, t + step) if final else t + step)
            # window-local indices: the window starts at or before max(0, t - before), and ends past
            # every needed field unless final (where stack_flow's clamp is the video's end)
            stacks = stack_flow(fields, frames - state.flow_offset, stack=stack)
            x = self.flow_backbone.preprocess_views(stacks, views=self.cfg.views)
            feats = self.flow_backbone.forward_features(x.flatten(0, 1).to(self.device))
            feats = feats.to("cpu", torch.float16).numpy().reshape(x.shape[0], x.shape[1], *feats.shape[1:])
            if state.flow_feat is None:
                kind = self.flow_backbone.meta.get("features", "pooled")
                dims = ("view", "time", "channel") if kind == "pooled" else ("view", "time", "channel", "y", "x")
                state.flow_feat = TimeBuffer(state, self._submit, "flow_feat", x.shape[0], state.expected, dims,
                                             np.float16)
            state.flow_feat.put(feats)
            state.flow_feat_t = int(frames[-1]) + 1
            drop = max(0, state.flow_feat_t - before - state.flow_offset)
            fields, state.flow_offset = fields[drop:], state.flow_offset + drop
        state.flow_fields = [fields]
        if final and state.flow_feat is not None:
            state.flow_feat.close(state.decoded)

    # ---- failures and writes --------------------------------------------------------------

    def _fail(self, job: VideoJob, exc: BaseException) -> None:
        job.attempts += 1
        reason = _one_line(exc)
        if job.attempts <= self.cfg.max_retries and not isinstance(exc, VideoError):
            self._todo.put(job)  # transient trouble: try again (decode errors are deterministic)
            return
        failure = Failure(job.video_id, job.path, "extract", reason, job.attempts)
        self._submit(self.store.record_failure, failure)
        self._submit(self.store.discard_video, job.video_id)
        self._remaining -= 1
        self._stats.failed += 1
        self._stats.failures.append(failure)
        self._progress(Event("failed", job.video_id, error=reason))

    def _submit(self, fn, *args, **kwargs) -> None:
        self._write_futures.append(self._writes.submit(fn, *args, **kwargs))
        if len(self._write_futures) > 256:
            self._check_writes()

    def _check_writes(self) -> None:
        """Surface writer errors (a full disk, a lost bucket) instead of losing them."""
        keep = []
        for future in self._write_futures:
            if future.done():
                future.result()
            else:
                keep.append(future)
        self._write_futures = keep

    def _drained(self) -> bool:
        """True when no more frames can arrive: every unfinished video is fully decoded.

        Only then is a short batch padded. Padding earlier (when a video ends or a decoder is a
        moment late) costs a whole forward for a few rows, and on a CPU it also steals the cores
        the decoders need; a video merely waits for the next full batch to complete it.
        """
        return len(self._states) == self._remaining and all(s.ended for s in self._states.values())


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, StpipeError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:300]


def describe(cfg: ExtractConfig, backbone, flow_method, flow_backbone) -> dict[str, Any]:
    """Provenance for the store's root attrs."""
    flow = None
    if cfg.flow:
        flow = {"method": cfg.flow_method, "params": dict(getattr(flow_method, "params", {})),
                "short_side": cfg.flow_short_side, "bound": cfg.flow_bound, "quantisation": cfg.flow_dtype}
        if flow_backbone is not None:
            flow["backbone"] = dict(flow_backbone.meta)
    return {"backbone": dict(backbone.meta), "flow": flow, "views": cfg.views}
