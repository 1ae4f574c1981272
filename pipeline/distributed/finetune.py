"""Stage three on Ray Train."""

from __future__ import annotations

from typing import Any

from pipeline.distributed.errors import first_line
from pipeline.distributed.session import ray_session
from pipeline.errors import StpipeError
from pipeline.progress import Progress, emitter

# ---- stage three: fine-tuning on Ray Train ------------------------------------------------------
# `TorchTrainer` starts `workers` processes with a torch.distributed group (gloo on CPU, NCCL on
# GPUs); each runs the same Ray-free loop (`pipeline.finetune.loop.train_worker`) with its rank.
# Rank 0 writes the run dir (which a multi-node run must share, like the store and the videos) and
# streams progress events to the driver through a Ray queue; every rank reports each epoch's
# metrics to Ray Train. A restarted worker group (`max_failures`) resumes from last.pt.


def run_finetune(setup, *, run_dir, progress: Progress | None = None) -> None:
    """Train `setup` (a `pipeline.finetune.source.Setup`) on Ray Train; blocks until done. Rank 0's
    progress events come to `progress` on this thread."""
    import threading
    from pathlib import Path

    cfg = setup.cfg
    try:
        from ray import train as ray_train
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as exc:
        from pipeline.errors import MissingDependencyError

        raise MissingDependencyError(f"Ray Train cannot be imported ({first_line(exc)}); "
                                     "pip install 'ray[train]' (it needs pandas and pyarrow)") from None
    emit = emitter(progress)
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
                event = events.get(timeout=0.2)
            except Empty:
                continue
            emit(event)
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
    def report(record: dict[str, Any]) -> None:
        ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float, str))})

    train_worker(config["setup"], run_dir=config["run_dir"], dist=dist, progress=config["events"].put, report=report)


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
        return StpipeError(f"finetune worker {rank} failed: {first_line(failures[rank])}")
    return StpipeError(f"Ray Train failed: {first_line(exc)}")
