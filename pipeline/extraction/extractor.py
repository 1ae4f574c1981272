"""The stage-one work unit: videos in, one complete store group per video out.

Three kinds of work overlap (DESIGN "hot paths"):
  decoders       decoder processes (or threads) decode, resize in FFmpeg's scaler, cut the views
                 and run CPU TV-L1 (`pipeline.decoding`), handing over typed chunk records
  this thread    the backbone on fixed-size batches mixing frames of several videos (`batching`),
                 and the flow-stream backbone on stacked fields (`flow_features`)
  a writer       compression and Zarr writes, strictly in submission order (`writer`)
Everything between them is bounded (the decoders' ring or queue, one batch of pending rows), so
memory stays bounded however long a video is.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.cpus import apply_threads
from pipeline.decoding.core import Ended, Failed, Frames, Opened
from pipeline.extraction import decoders
from pipeline.extraction.batching import Batcher
from pipeline.extraction.buffers import TimeBuffer, VideoOutput
from pipeline.extraction.config import ExtractConfig
from pipeline.extraction.flow_features import FlowFeatures
from pipeline.extraction.records import TASK, Stats, VideoJob
from pipeline.extraction.threads import ThreadGovernor
from pipeline.progress import Advanced, Note, Progress, emitter
from pipeline.store import Failure, FeatureStore
from pipeline.store.writer import Writer, write_threads
from pipeline.views import num_views

__all__ = ["Extractor", "Stats", "VideoJob"]


@dataclass
class _VideoState:
    job: VideoJob
    expected: int
    output: VideoOutput = field(default_factory=VideoOutput)
    frame_index: list[int] = field(default_factory=list)
    rgb: TimeBuffer | None = None
    flow: TimeBuffer | None = None
    flow_features: FlowFeatures | None = None
    clips: list[torch.Tensor] = field(default_factory=list)  # video backbones: uint8 crops
    fps: float = 0.0
    rows_pending: int = 0
    decoded: int = 0
    ended: bool = False
    failed: bool = False


class Extractor:
    """Holds the models (and, once started, the decoders) of one worker; `process` runs any list of videos.

    `cores`: the cores this worker owns (default: its CPU affinity), for the decoder choice;
    `progress`: Notes (the decoder choice, the compute threads) and a unit of the "extract" task per
    video (`item`: its VideoJob, or its store Failure).
    """

    def __init__(self, cfg: ExtractConfig, store: FeatureStore, *, device: torch.device, backbone,
                 flow_method=None, flow_backbone=None, cores: int | None = None,
                 progress: Progress | None = None):
        self.cfg, self.store, self.device = cfg, store, device
        self.batch_size = cfg.batch_for(torch.device(device).type)
        self.backbone, self.flow_method, self.flow_backbone = backbone, flow_method, flow_backbone
        self.views = num_views(cfg.views)
        self.video_kind = backbone.kind == "video"
        self.cores, self.emit = cores, emitter(progress)
        self.pinned = torch.device(device).type == "cuda"
        self.in_flight = 1 if self.pinned else 0  # batches whose features are still being copied back
        self.decoders = None  # started on the first `process`, kept for the next (Ray calls)
        self.governor = None  # torch's thread count while decoder processes share the cores (threads.py)
        self.threads_given = torch.get_num_threads()  # given back on close: the count is process-wide
        if cfg.compute_threads:
            apply_threads(cfg.compute_threads)

    # ---- public ---------------------------------------------------------------------------

    def process(self, jobs: Iterable[VideoJob]) -> Stats:
        started = time.perf_counter()
        jobs = list(jobs)
        self._stats = stats = Stats()
        self._states: dict[str, _VideoState] = {}
        self._remaining = len(jobs)
        if not jobs:
            return stats
        if self.decoders is None:
            choice = decoders.choose(self.cfg, len(jobs), self.flow_method, self.cores)
            self.decoders, line = decoders.start(self.cfg, self.backbone, self.flow_method, choice, self.device,
                                                 self.emit)
            self.note(line)
            if choice.kind == "processes" and not self.cfg.compute_threads and not self.video_kind:
                self.governor = ThreadGovernor(torch.get_num_threads(), torch.set_num_threads,
                                               on_choice=self._say_threads)
        self._batcher = Batcher(self.backbone, self.device, max(self.batch_size, self.views), in_flight=self.in_flight,
                                pinned=self.pinned, deliver=self._deliver, stats=stats,
                                forwarded=self.governor.forwarded if self.governor else None)
        self._writer = Writer(write_threads(self.store))
        try:
            for job in jobs:
                self.decoders.submit(job)
            while self._remaining > 0:
                items = self.decoders.poll(timeout=0.05)
                if not items:
                    self._batcher.run(force=self._drained())
                    self._batcher.scatter(keep=0)  # idle: no later batch to overlap with
                    self._writer.check()
                    continue
                for job, record in items:
                    self._handle(job, record)
                if not self.decoders.pending():
                    self._batcher.run(force=self._drained())
            self._batcher.run(force=True)
        except BaseException:
            self.close()  # a failed run leaves no decoder behind
            raise
        finally:
            self._writer.close()
        stats.seconds = time.perf_counter() - started
        return stats

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the decoders (processes end, the shared-memory ring is freed); torch's thread count back
        to what this extractor was given (a caller's later work in the process is not left on 1)."""
        if self.decoders is not None:
            self.decoders.close()
            self.decoders = None
        if torch.get_num_threads() != self.threads_given:
            torch.set_num_threads(self.threads_given)

    def note(self, line: str) -> None:
        self.emit(Note(line, source=""))

    def _say_threads(self, threads: int, rates: dict[int, float]) -> None:
        measured = ", ".join(f"{rate:,.0f} frames/s on {n}" for n, rate in sorted(rates.items()))
        self.note(f"compute threads: {threads} ({measured}; the decoder processes share these cores)")

    # ---- records from the decoders --------------------------------------------------------

    def _handle(self, job: VideoJob, record) -> None:
        state = self._states.get(job.video_id)
        if isinstance(record, Opened):
            state = _VideoState(job, record.expected, fps=record.fps)
            self._states[job.video_id] = state
            self._begin(state)
        elif isinstance(record, Frames):
            if state is None or state.failed:
                return
            n = len(record.indices)
            state.frame_index.extend(record.indices.tolist())
            state.decoded += n
            # host arrays from CPU decoders, device tensors from GPU decoders (pipeline/decoding/gpu.py)
            crops = record.crops if isinstance(record.crops, torch.Tensor) else torch.from_numpy(record.crops)
            if self.video_kind:
                state.clips.append(crops)
            else:
                state.rows_pending += n
                self._batcher.add(state, crops)
            if record.fields is not None:
                state.flow.put(record.fields[None])
                if state.flow_features is not None:
                    state.flow_features.add(record.fields)
                    state.flow_features.run(state.decoded, final=False)
            self._batcher.run(force=False)
        elif isinstance(record, Ended):
            if state is None:  # failed meanwhile
                return
            state.ended = True
            self._maybe_finish(state)
        elif isinstance(record, Failed):
            if state is not None:
                state.failed = True
                self._states.pop(job.video_id, None)
            self._fail(job, record)

    def _begin(self, state: _VideoState) -> None:
        job, cfg = state.job, self.cfg
        attrs = {"path": job.path, "label": job.label, "label_index": job.label_index, "split": job.split,
                 "group": job.group, "start": job.start, "end": job.end, "fps": state.fps}
        output, store = state.output, self.store

        def begin():  # in the writer thread, after any writes still queued for an earlier attempt
            output.writer = store.begin_video(job.video_id, attrs)

        submit = functools.partial(self._writer.submit, key=job.video_id)  # one lane per video: in order
        submit(begin)
        kind = self.backbone.meta.get("features", "pooled")
        feature_dims = ("channel",) if kind == "pooled" else ("channel", "y", "x")
        state.rgb = TimeBuffer(output, submit, "rgb", self.views, self._feature_length(state.expected),
                               ("view", "time", *feature_dims), np.float16)
        if cfg.flow:
            dtype = np.uint8 if cfg.flow_dtype == "uint8" else np.float16
            flow_attrs = {"bound": cfg.flow_bound, "quantisation": cfg.flow_dtype, "method": cfg.flow_method}
            state.flow = TimeBuffer(output, submit, "flow", 1, max(0, state.expected - 1),
                                    ("time", "component", "y", "x"), dtype, flow_attrs)
        if self.flow_backbone is not None:
            expected = state.expected
            state.flow_features = FlowFeatures(
                self.flow_backbone, stack=cfg.flow_stack, views=cfg.views, device=self.device,
                step=max(1, self.batch_size // max(1, self.views)),
                make_buffer=lambda views, dims: TimeBuffer(output, submit, "flow_feat", views, expected, dims,
                                                           np.float16))

    def _feature_length(self, frames: int) -> int:
        if not self.video_kind:
            return frames
        idx, _ = self.backbone.clip_index(max(1, frames))
        return len(idx)

    def _deliver(self, state: _VideoState, views: int, k: int, features) -> None:
        if state.failed:
            return
        state.rgb.put(features)
        state.rows_pending -= k
        self._maybe_finish(state)

    def _maybe_finish(self, state: _VideoState) -> None:
        if not state.ended or state.rows_pending > 0 or state.failed:
            return
        if self.video_kind:
            self._clip_features(state)
        if state.flow_features is not None:
            state.flow_features.run(state.decoded, final=True)
        n = state.decoded
        state.rgb.close(self._feature_length(n))
        if state.flow is not None:
            state.flow.close(max(0, n - 1))
        attrs = {"num_frames": n, "frame_index": state.frame_index}
        if self.video_kind:
            _, centres = self.backbone.clip_index(max(1, n))
            attrs["feature_frame_index"] = [state.frame_index[i] for i in centres.tolist()]
        output = state.output
        self._writer.submit(lambda: output.writer.finish(**attrs), key=state.job.video_id)
        self._writer.submit(self.store.clear_failure, state.job.video_id, key=state.job.video_id)
        self._states.pop(state.job.video_id, None)
        self._remaining -= 1
        self._stats.done += 1
        self._stats.frames += n
        self.emit(Advanced(TASK, amounts={"frames": n}, item=state.job))

    def _clip_features(self, state: _VideoState) -> None:
        frames = torch.cat(state.clips, dim=1)  # (V, T, C, H, W)
        state.clips = []
        idx, _ = self.backbone.clip_index(frames.shape[1])
        per_batch = max(1, self.batch_size // max(1, idx.shape[1]))
        normalize = self.backbone.preprocessor.normalize
        out = []
        for v in range(frames.shape[0]):
            feats = []
            for i in range(0, idx.shape[0], per_batch):
                clips = self.backbone.make_clips(frames[v], idx[i : i + per_batch]).to(self.device)
                clips = normalize(clips.transpose(1, 2)).transpose(1, 2)  # channels next to (h, w)
                feats.append(self.backbone.forward_features(clips).to("cpu", torch.float16))
            out.append(torch.cat(feats))
        state.rgb.put(torch.stack(out).numpy())

    # ---- failures -------------------------------------------------------------------------

    def _fail(self, job: VideoJob, failed: Failed) -> None:
        job.attempts += 1
        if job.attempts <= self.cfg.max_retries and failed.retry:
            self.decoders.submit(job)  # transient trouble: try again (decode errors are deterministic)
            return
        failure = Failure(job.video_id, job.path, "extract", failed.error, job.attempts)
        self._writer.submit(self.store.record_failure, failure, key=job.video_id)
        self._writer.submit(self.store.discard_video, job.video_id, key=job.video_id)
        self._remaining -= 1
        self._stats.failed += 1
        self._stats.failures.append(failure)
        self.emit(Advanced(TASK, message=f"failed: {job.video_id}: {failed.error}", item=failure))

    def _drained(self) -> bool:
        """True when no more frames can arrive: every unfinished video is fully decoded.

        Only then is a short batch padded. Padding earlier (when a video ends or a decoder is a
        moment late) costs a whole forward for a few rows, and on a CPU it also steals the cores
        the decoders need; a video merely waits for the next full batch to complete it.
        """
        return len(self._states) == self._remaining and all(s.ended for s in self._states.values())
