"""Stage one on Ray.

Extraction runs the same `Extractor` work unit as the in-process executor, inside long-lived
actors that load the backbone once. Each actor decodes what it computes (decoded frames never
cross the object store); the driver hands out small batches of videos, keeps a bounded number
in flight per actor (a 200k-video manifest never becomes 200k pending objects), and re-submits the
videos of a lost actor or node elsewhere before recording them as failures.
"""

from __future__ import annotations

import errno
import math
import time
from collections import deque
from dataclasses import replace
from typing import Any

from pipeline.distributed.errors import first_line, raised
from pipeline.distributed.session import ray_session
from pipeline.errors import ConfigError, WorkerStartError, no_space
from pipeline.extraction import ExtractConfig, VideoJob
from pipeline.extraction.records import TASK, Stats
from pipeline.progress import Advanced, Event, Note, Progress, emitter
from pipeline.store import Failure

VIDEOS_PER_CALL = 4  # the first calls, before any frame count is known
CALL_BATCHES = 4  # later calls carry about this many backbone batches of frames,
CALL_FRAMES = 128  # and at least this many (CPU batches are small; each call pays a drain)
WORKER_START_TIMEOUT = 600.0  # seconds to wait for a worker when none is running


def _worker_class(ray):
    @ray.remote
    class ExtractWorker:
        """Loads the models once; `process` runs the shared work unit on a batch of videos."""

        def __init__(self, cfg: ExtractConfig):
            from pipeline.extraction.models import load_models
            from pipeline.faults import fault_point
            from pipeline.store import FeatureStore

            fault_point("worker_start")
            self.cfg = cfg
            device, backbone, flow_method, flow_backbone = load_models(cfg)
            if cfg.decoder == "nvdec":  # one that cannot be had here stops the run as a worker that cannot start
                from pipeline.extraction.decoders import place

                place(cfg, device)
            store = FeatureStore.open(cfg.output, mode="r+", storage_options=cfg.storage_options)
            from pipeline.extraction import Extractor

            # decoders: processes on the cores this actor was given (threads on one), kept across calls
            self.events: list[Event] = []  # notes and videos done: sent with the next result
            self.extractor = Extractor(cfg, store, device=device, backbone=backbone, flow_method=flow_method,
                                       flow_backbone=flow_backbone, cores=max(1, int(cfg.cpus_per_task)),
                                       progress=self.events.append)

        def process(self, jobs: list[VideoJob]) -> tuple[Stats, list[Event]]:
            stats = self.extractor.process(jobs)
            events, self.events[:] = list(self.events), []
            return stats, events

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    return ExtractWorker


def run_extraction(cfg: ExtractConfig, jobs: list[VideoJob], progress: Progress | None = None) -> Stats:
    """Extract `jobs` on Ray actors; returns the same Stats as `Extractor.process`, and the workers'
    progress events (their notes prefixed with the worker's name) to `progress`."""
    if cfg.output.startswith("memory://"):
        raise ConfigError("a memory:// store lives in one process; use --executor local or a shared store URL")
    emit = emitter(progress)
    total = Stats()
    if not jobs:
        return total
    started = time.perf_counter()
    with ray_session(cfg.ray_address) as ray:
        gpus = ray.cluster_resources().get("GPU", 0)
        per_worker_gpu = cfg.gpus_per_worker if cfg.gpus_per_worker else (1.0 if gpus else 0.0)
        workers = cfg.workers or (max(1, int(gpus / per_worker_gpu)) if per_worker_gpu else 1)
        # Workers pick CUDA when the actor got a GPU; the driver's own device choice does not travel.
        worker_cfg = replace(cfg, device="auto" if per_worker_gpu else "cpu", executor="local")
        actor = _worker_class(ray).options(num_cpus=cfg.cpus_per_task, num_gpus=per_worker_gpu,
                                           max_restarts=0, max_task_retries=0)
        if cfg.flow and cfg.flow_compile == "on" and not per_worker_gpu:
            warm_flow_compile_on_nodes(ray, cfg, emit)
        queue: deque[VideoJob] = deque(jobs)
        # ref -> (worker, batch); batch None marks a readiness ping of a newly started worker
        in_flight: dict[Any, tuple[Any, list[VideoJob] | None]] = {}
        lost: set[Any] = set()
        spare_starts = 2 * workers  # replacements allowed for lost workers before giving up on them
        ever_up = False  # no worker came up: the run stops with why, no video is recorded as failed
        start_error = ""

        names: dict[Any, str] = {}  # worker -> "worker k", for its notes

        def start_worker() -> None:
            worker = actor.remote(worker_cfg)
            names[worker] = f"worker {len(names) + 1}"
            in_flight[worker.node.remote()] = (worker, None)

        def submit(worker) -> None:
            per_call = videos_per_call(cfg, total.frames, total.done, "cuda" if per_worker_gpu else "cpu")
            batch = [queue.popleft() for _ in range(min(per_call, len(queue)))]
            if batch:
                in_flight[worker.process.remote(batch)] = (worker, batch)

        for _ in range(workers):
            start_worker()
        while in_flight:
            if not queue and all(batch is None for _, batch in in_flight.values()):
                break  # only workers still starting (maybe never: a shrunken cluster) and nothing to give them
            starting_only = all(batch is None for _, batch in in_flight.values())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=WORKER_START_TIMEOUT if starting_only else None)
            if not ready:  # no worker could be placed in time (the run stops below if none ever came up)
                start_error = start_error or (f"none was placed within {WORKER_START_TIMEOUT:.0f} s (each asks for "
                                              f"{cfg.cpus_per_task:g} CPU, {per_worker_gpu:g} GPU)")
                break
            worker, batch = in_flight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:  # the actor or its node died
                if batch is None and exc.actor_init_failed:  # its constructor raised: so would every other's
                    raise WorkerStartError(f"Ray workers could not start: {raised(exc)}") from None
                start_error = start_error or raised(exc)
                if batch is not None:
                    _requeue_or_fail(cfg, batch, queue, total, emit, f"worker lost: {first_line(exc)}")
                if worker not in lost:  # its other in-flight call fails too: replace it once
                    lost.add(worker)
                    if spare_starts > 0:
                        spare_starts -= 1
                        start_worker()  # wherever the scheduler finds room; gets work once it is up
                continue
            except ray.exceptions.RayError as exc:
                if no_space(exc):  # the store's disk is full: every worker would fail alike (stages/extract.py names it)
                    raise OSError(errno.ENOSPC, first_line(exc)) from exc
                if batch is not None:
                    _requeue_or_fail(cfg, batch, queue, total, emit, first_line(exc))
                submit(worker)
                continue
            if batch is None:  # a worker is up: two calls, so the next batch waits while one runs
                ever_up = True
                submit(worker)
                submit(worker)
                continue
            stats, events = result
            for event in events:
                emit(replace(event, message=f"{names[worker]}: {event.message}") if isinstance(event, Note) else event)
            total.done += stats.done
            total.failed += stats.failed
            total.frames += stats.frames
            total.failures.extend(stats.failures)
            submit(worker)
        if queue and not ever_up:
            raise WorkerStartError(f"Ray workers could not start: {start_error}")
        for job in queue:  # no worker left to take them
            total.failed += 1
            total.failures.append(Failure(job.video_id, job.path, "ray", "no live Ray worker left", job.attempts))
        for failure in total.failures:
            if failure.stage == "ray":
                _record(cfg, failure)
    total.seconds = time.perf_counter() - started
    return total


def warm_flow_compile_on_nodes(ray, cfg: ExtractConfig, emit: Progress) -> dict[str, float]:
    """Compile the CPU TV-L1 kernels once per node, before the workers start: they then load them
    from inductor's disk cache in seconds instead of each compiling for minutes at the same time.
    A node whose cache is already warm answers at once. Returns seconds per node id."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
    if not nodes:
        return {}
    emit(Note(f"TV-L1: compiling the kernels once on each of {len(nodes)} node(s) before the workers start "
              "(1-3 min on a cold machine, seconds with a warm inductor cache)", source=""))
    task = ray.remote(num_cpus=1, max_retries=0)(_warm_node)
    refs = {node: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(cfg)
            for node in nodes}
    seconds: dict[str, float] = {}
    for node, ref in refs.items():
        try:
            seconds[node] = ray.get(ref, timeout=WORKER_START_TIMEOUT)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:  # the workers compile themselves
            ray.cancel(ref, force=True)
            emit(Note(f"TV-L1: warm-up on node {node[:8]} failed ({first_line(exc)}); its workers compile on first use",
                      source=""))
    if seconds:
        emit(Note(f"TV-L1: kernels ready in {max(seconds.values()):.0f} s", source=""))
    return seconds


def _warm_node(cfg: ExtractConfig) -> float:
    """In a Ray task on one node: compile the kernels unless this node's cache already holds them."""
    from pipeline.flow import build_flow
    from pipeline.flow.compile_policy import cache_is_warm, warm_up

    method = build_flow(cfg.flow_method, device="cpu", compile=True)
    return 0.0 if cache_is_warm(method) else warm_up(method)


def videos_per_call(cfg: ExtractConfig, frames_done: int, videos_done: int, device_type: str = "cpu") -> int:
    """Videos in one actor call: enough frames for CALL_BATCHES backbone batches at the mean length
    seen so far, at most `videos_in_flight`. Each call ends by draining the worker's pipeline (a
    padded last batch, the writes): with 4 short videos a call, that drain cost 20 ms a video."""
    cap = max(1, cfg.videos_in_flight)
    if videos_done == 0:
        return min(VIDEOS_PER_CALL, cap)
    mean_frames = max(1.0, frames_done / videos_done)
    frames = max(CALL_FRAMES, CALL_BATCHES * cfg.batch_for(device_type))
    return int(min(cap, max(1, math.ceil(frames / mean_frames))))


def _requeue_or_fail(cfg, batch, queue, total, emit: Progress, reason: str) -> None:
    for job in batch:
        job.attempts += 1
        if job.attempts <= cfg.max_retries + 1:
            queue.append(job)  # redone on a live worker; its half-written group is replaced
        else:
            total.failed += 1
            total.failures.append(Failure(job.video_id, job.path, "ray", reason, job.attempts))
            emit(Advanced(TASK, message=f"failed: {job.video_id}: {reason}", item=total.failures[-1]))


def _record(cfg: ExtractConfig, failure: Failure) -> None:
    from pipeline.store import FeatureStore

    store = FeatureStore.open(cfg.output, mode="r+", storage_options=cfg.storage_options)
    store.record_failure(failure)
    store.discard_video(failure.video_id)
