"""Ablation trials on Ray."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from pipeline.distributed.errors import first_line
from pipeline.distributed.session import ray_session
from pipeline.errors import ConfigError

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
            return trial, Outcome(False, error=f"Ray worker lost: {first_line(exc)}",
                                  seconds=time.perf_counter() - submitted)
        outcome.metrics["dispatch_seconds"] = time.perf_counter() - submitted - outcome.seconds
        return trial, outcome


def _trial_task(ray):
    @ray.remote(max_retries=0)
    def run_trial(fn, shared, trial, threads: int, device: str):
        import torch

        from pipeline.ablation.runner import run_attempt

        torch.set_num_threads(threads)
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
