"""The Ray layer: the only module that imports Ray.

Extraction runs the same `Extractor` work unit as the in-process executor, inside long-lived
actors that load the backbone once. Each actor decodes what it computes (decoded frames never
cross the object store); the driver hands out small batches of videos, keeps a bounded number
in flight per actor (a 200k-video manifest never becomes 200k pending objects), and re-submits the
videos of a lost actor or node elsewhere before recording them as failures.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from pipeline.errors import ConfigError, StpipeError, WorkerStartError
from pipeline.extraction import ExtractConfig, VideoJob
from pipeline.extraction.extractor import Event, Stats
from pipeline.store import Failure

VIDEOS_PER_CALL = 4  # the first calls, before any frame count is known
CALL_BATCHES = 4  # later calls carry about this many backbone batches of frames
WORKER_START_TIMEOUT = 600.0  # seconds to wait for a worker when none is running


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a core dependency
        raise StpipeError("ray is not installed; pip install 'ray[default]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str = "", *, num_cpus: int | None = None, num_gpus: int | None = None,
                dashboard: bool = False) -> Iterator[Any]:
    """Join `address` (auto or HOST:PORT), or start an embedded local Ray for this run.

    The embedded Ray has no dashboard unless `dashboard` (then on 127.0.0.1 only) and uses token
    authentication (Ray's default unless RAY_AUTH_MODE=disabled). Its own gRPC servers still
    listen on all interfaces: Ray 2.60 turns a loopback
    node address into the machine's IP and has no loopback-only switch, so the session token
    (~/.ray/auth_token) is what keeps other hosts out (tests/faults/test_security.py records this).
    An already initialised Ray (e.g. a test's cluster) is used as it is and left running.
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": dashboard, "logging_level": "WARNING",
                              "configure_logging": True, "log_to_driver": True}
    if address:
        _check_reachable(address)
        kwargs["address"] = address
        # Object-store credentials of the driver travel with the job, so workers reach the same store.
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_APPLICATION_CREDENTIALS"))}
        if env:
            kwargs["runtime_env"] = {"env_vars": env}
    else:  # embedded, sized to this machine; "local" ignores a (stale) ray_current_cluster file
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1")
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"Ray cluster at {address}" if address else "an embedded local Ray"
        raise StpipeError(f"cannot start or join {where}: {str(exc).strip().splitlines()[0][:200]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a HOST:PORT Ray address does not answer."""
    import socket

    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected auto or HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise StpipeError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); "
                          "is `ray start --head` running there?") from None


def _worker_class(ray):
    @ray.remote
    class ExtractWorker:
        """Loads the models once; `process` runs the shared work unit on a batch of videos."""

        def __init__(self, cfg: ExtractConfig):
            from pipeline.faults import fault_point
            from pipeline.store import FeatureStore
            from stages.extract import load_models

            fault_point("worker_start")
            self.cfg = cfg
            device, backbone, flow_method, flow_backbone = load_models(cfg)
            store = FeatureStore.open(cfg.output, mode="r+", storage_options=cfg.storage_options)
            from pipeline.extraction import Extractor

            self.extractor = Extractor(cfg, store, device=device, backbone=backbone, flow_method=flow_method,
                                       flow_backbone=flow_backbone)

        def process(self, jobs: list[VideoJob]) -> tuple[Stats, list[Event]]:
            events: list[Event] = []
            stats = self.extractor.process(jobs, progress=events.append)
            return stats, events

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    return ExtractWorker


def run_extraction(cfg: ExtractConfig, jobs: list[VideoJob],
                   progress: Callable[[Event], None] | None = None, note: Callable[[str], None] | None = None) -> Stats:
    """Extract `jobs` on Ray actors; returns the same Stats as `Extractor.process`."""
    if cfg.output.startswith("memory://"):
        raise ConfigError("a memory:// store lives in one process; use --executor local or a shared store URL")
    progress = progress or (lambda event: None)
    note = note or (lambda message: None)
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
            warm_flow_compile(ray, cfg, note)
        queue: deque[VideoJob] = deque(jobs)
        # ref -> (worker, batch); batch None marks a readiness ping of a newly started worker
        in_flight: dict[Any, tuple[Any, list[VideoJob] | None]] = {}
        lost: set[Any] = set()
        spare_starts = 2 * workers  # replacements allowed for lost workers before giving up on them
        ever_up = False  # no worker came up: the run stops with why, no video is recorded as failed
        start_error = ""

        def start_worker() -> None:
            worker = actor.remote(worker_cfg)
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
                    raise WorkerStartError(f"Ray workers could not start: {_raised(exc)}") from None
                start_error = start_error or _raised(exc)
                if batch is not None:
                    _requeue_or_fail(cfg, batch, queue, total, progress, f"worker lost: {_first_line(exc)}")
                if worker not in lost:  # its other in-flight call fails too: replace it once
                    lost.add(worker)
                    if spare_starts > 0:
                        spare_starts -= 1
                        start_worker()  # wherever the scheduler finds room; gets work once it is up
                continue
            except ray.exceptions.RayError as exc:
                if batch is not None:
                    _requeue_or_fail(cfg, batch, queue, total, progress, _first_line(exc))
                submit(worker)
                continue
            if batch is None:  # a worker is up: two calls, so the next batch waits while one runs
                ever_up = True
                submit(worker)
                submit(worker)
                continue
            stats, events = result
            for event in events:
                progress(event)
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


def warm_flow_compile(ray, cfg: ExtractConfig, note: Callable[[str], None]) -> dict[str, float]:
    """Compile the CPU TV-L1 kernels once per node, before the workers start: they then load them
    from inductor's disk cache in seconds instead of each compiling for minutes at the same time.
    A node whose cache is already warm answers at once. Returns seconds per node id."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
    if not nodes:
        return {}
    note(f"TV-L1: compiling the kernels once on each of {len(nodes)} node(s) before the workers start "
         "(1-3 min on a cold machine, seconds with a warm inductor cache)")
    task = ray.remote(num_cpus=1, max_retries=0)(_warm_node)
    refs = {node: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(cfg)
            for node in nodes}
    seconds: dict[str, float] = {}
    for node, ref in refs.items():
        try:
            seconds[node] = ray.get(ref, timeout=WORKER_START_TIMEOUT)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:  # the workers compile themselves
            ray.cancel(ref, force=True)
            note(f"TV-L1: warm-up on node {node[:8]} failed ({_first_line(exc)}); its workers compile on first use")
    if seconds:
        note(f"TV-L1: kernels ready in {max(seconds.values()):.0f} s")
    return seconds


def _warm_node(cfg: ExtractConfig) -> float:
    """In a Ray task on one node: the warm-up of `stages.extract.warm_flow_compile`, if needed."""
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
    return int(min(cap, max(1, math.ceil(CALL_BATCHES * cfg.batch_for(device_type) / mean_frames))))


def _requeue_or_fail(cfg, batch, queue, total, progress, reason: str) -> None:
    for job in batch:
        job.attempts += 1
        if job.attempts <= cfg.max_retries + 1:
            queue.append(job)  # redone on a live worker; its half-written group is replaced
        else:
            total.failed += 1
            total.failures.append(Failure(job.video_id, job.path, "ray", reason, job.attempts))
            progress(Event("failed", job.video_id, error=reason))


def _record(cfg: ExtractConfig, failure: Failure) -> None:
    from pipeline.store import FeatureStore

    store = FeatureStore.open(cfg.output, mode="r+", storage_options=cfg.storage_options)
    store.record_failure(failure)
    store.discard_video(failure.video_id)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


_RAISED = re.compile(r"^([A-Za-z_][\w.]*): (.+)$")


def _raised(exc) -> str:
    """Why an actor died while starting, as one line. An exception in its constructor ends Ray's
    text: stpipe's own errors by their message, others as `Type: message`. A crash (killed, lost
    node): Ray's own reason, the first line after the header and the actor's indented identity."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    match = _RAISED.match(lines[-1])
    if exc.actor_init_failed and match is not None:
        kind, message = match.groups()
        return (message if kind.startswith("pipeline.errors.") else f"{kind.rpartition('.')[2]}: {message}")[:300]
    reason = next((line for line in text.splitlines()[1:] if line.strip() and not line.startswith("\t")), lines[0])
    return reason.strip().split(" Some common causes")[0][:300]


# ---- stage three: fine-tuning on Ray Train ------------------------------------------------------
# `TorchTrainer` starts `workers` processes with a torch.distributed group (gloo on CPU, NCCL on
# GPUs); each runs the same Ray-free loop (`pipeline.finetune.loop.train_worker`) with its rank.
# Rank 0 writes the run dir (which a multi-node run must share, like the store and the videos) and
# streams progress events to the driver through a Ray queue; every rank reports each epoch's
# metrics to Ray Train. A restarted worker group (`max_failures`) resumes from last.pt.


def run_finetune(setup, *, run_dir, callback: Callable[..., None] | None = None) -> None:
    """Train `setup` (a `pipeline.finetune.source.Setup`) on Ray Train; blocks until done."""
    import threading
    from pathlib import Path

    cfg = setup.cfg
    try:
        from ray import train as ray_train
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as exc:
        from pipeline.errors import MissingDependencyError

        raise MissingDependencyError(f"Ray Train cannot be imported ({_first_line(exc)}); "
                                     "pip install 'ray[train]' (it needs pandas and pyarrow)") from None
    emit = callback or (lambda event, **info: None)
    run_dir = Path(run_dir).absolute()
    use_gpu = cfg.gpus_per_worker > 0
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if use_gpu else {})}
    with ray_session(cfg.ray_address) as ray:
        from ray.util.queue import Empty, Queue

        events = Queue(actor_options={"num_cpus": 0})
        trainer = TorchTrainer(
            _finetune_loop,
            train_loop_config={"setup": setup, "run_dir": str(run_dir), "events": events},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ray_train.ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu,
                                                   resources_per_worker=resources),
            run_config=ray_train.RunConfig(name="finetune", storage_path=str(run_dir / "ray"),
                                           failure_config=ray_train.FailureConfig(max_failures=cfg.max_failures)),
        )
        outcome: dict[str, BaseException] = {}

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                outcome["error"] = exc

        thread = threading.Thread(target=fit, name="stpipe-ray-train", daemon=True)
        thread.start()
        while thread.is_alive() or not events.empty():
            try:
                event, info = events.get(timeout=0.2)
            except Empty:
                continue
            emit(event, **info)
        thread.join()
        ray.kill(events.actor)
    if "error" in outcome:
        raise _finetune_error(outcome["error"]) from None


def _finetune_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its rank and device, then the shared loop."""
    import ray.train
    import ray.train.torch

    from pipeline.finetune.loop import Dist, train_worker

    context = ray.train.get_context()
    dist = Dist(rank=context.get_world_rank(), world=context.get_world_size(), device=ray.train.torch.get_device())
    events = config["events"]

    def callback(event: str, **info: Any) -> None:
        events.put((event, info))

    def report(record: dict[str, Any]) -> None:
        ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float, str))})

    train_worker(config["setup"], run_dir=config["run_dir"], dist=dist, callback=callback, report=report)


def _finetune_error(exc: BaseException) -> StpipeError:
    """A failed Ray Train run as one line; a worker's own StpipeError keeps its type and message."""
    failures = getattr(exc, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        while cause is not None and not isinstance(cause, StpipeError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if isinstance(cause, StpipeError):
            return cause
    if failures:
        rank = min(failures)
        return StpipeError(f"finetune worker {rank} failed: {_first_line(failures[rank])}")
    return StpipeError(f"Ray Train failed: {_first_line(exc)}")


# ---- ablation trials -----------------------------------------------------------------------------
# Each trial is one plain Ray task (no Tune: the grid is fixed, the run dirs are train-head's own,
# and a task costs milliseconds to start in a warm worker). The store's features go into the object
# store once per ablation (`ray.put`); numpy buffers travel out of band, so every trial on a node
# maps the same read-only copy. The driver keeps at most `slots` trials in flight, so "running" is
# what runs, and the shared scheduling loop (`pipeline.ablation.runner`) handles retries.


class TrialExecutor:
    """`pipeline.ablation.runner.Executor` on Ray: submit(trial) / next_done()."""

    def __init__(self, ray, task, fn, shared_ref, *, slots: int, threads: int, device: str):
        self.ray, self.task, self.fn, self.shared_ref = ray, task, fn, shared_ref
        self.slots, self.threads, self.device = slots, threads, device
        self.in_flight: dict[Any, tuple[Any, float]] = {}

    def submit(self, trial) -> None:
        ref = self.task.remote(self.fn, self.shared_ref, trial, self.threads, self.device)
        self.in_flight[ref] = (trial, time.perf_counter())

    def next_done(self):
        from pipeline.ablation.runner import Outcome

        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
        trial, submitted = self.in_flight.pop(ready[0])
        try:
            outcome = self.ray.get(ready[0])
        except self.ray.exceptions.RayError as exc:  # the worker process died (OOM kill, segfault, lost node)
            return trial, Outcome(False, error=f"Ray worker lost: {_first_line(exc)}",
                                  seconds=time.perf_counter() - submitted)
        outcome.metrics["dispatch_seconds"] = time.perf_counter() - submitted - outcome.seconds
        return trial, outcome


def _trial_task(ray):
    @ray.remote(max_retries=0)
    def run_trial(fn, shared, trial, threads: int, device: str):

        from pipeline.ablation.runner import run_attempt
        from pipeline.cpus import apply_threads

        apply_threads(threads)
        return run_attempt(fn, trial, shared, device=device)

    return run_trial


@contextlib.contextmanager
def trial_executor(fn, shared, *, address: str = "", cpus_per_trial: float = 1.0,
                   gpus_per_trial: float | None = None, max_concurrent: int = 0) -> Iterator[TrialExecutor]:
    """Ray session + shared features in the object store + an executor sized to the cluster."""
    with ray_session(address) as ray:
        total = ray.cluster_resources()
        gpus = total.get("GPU", 0.0)
        per_gpu = gpus_per_trial if gpus_per_trial is not None else (0.25 if gpus else 0.0)
        if per_gpu > 0 and not gpus:
            raise ConfigError(f"--gpus-per-trial {per_gpu}: the Ray cluster has no GPUs")
        largest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
        if cpus_per_trial > largest:
            raise ConfigError(f"--cpus-per-trial {cpus_per_trial}: no Ray node has that many CPUs (largest {largest:g})")
        slots = int(total.get("CPU", 1.0) // cpus_per_trial)
        if per_gpu:
            slots = min(slots, int(gpus // per_gpu))
        if max_concurrent:
            slots = min(slots, max_concurrent)
        shared_ref = ray.put(shared)
        del shared  # the driver's arrays are freed: the object store holds the one copy
        task = _trial_task(ray).options(num_cpus=cpus_per_trial, num_gpus=per_gpu)
        yield TrialExecutor(ray, task, fn, shared_ref, slots=max(1, slots), threads=max(1, int(cpus_per_trial)),
                            device="auto" if per_gpu else "cpu")
