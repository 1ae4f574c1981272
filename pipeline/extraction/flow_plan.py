"""How much TV-L1 a run will compute, and so whether to compile its kernels (flow/compile_policy.py).

The manifest holds no frame counts: a few videos spread over the run are probed (packet counts,
milliseconds each) and the mean stands for the rest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.extraction.config import ExtractConfig
from pipeline.extraction.records import VideoJob
from pipeline.flow.compile_policy import ENV, CompileChoice, cache_is_warm, choose

PROBED_VIDEOS = 8


@dataclass(frozen=True)
class FlowWork:
    pairs: int  # estimated flow pairs of the whole run
    pixels: int  # pixels of one flow frame (the probed videos' mean)
    probed: int  # videos probed for the estimate


def estimate_flow_work(cfg: ExtractConfig, jobs: Sequence[VideoJob], sample: int = PROBED_VIDEOS) -> FlowWork:
    """Pairs and flow-frame size of `jobs`, extrapolated from up to `sample` evenly spread videos."""
    from pipeline.errors import StpipeError
    from pipeline.video import FrameSelection, probe, selected_indices, trim_range

    if not jobs:
        return FlowWork(0, 0, 0)
    select = FrameSelection(mode=cfg.frames, step=cfg.frame_step, fps=cfg.frame_fps, num=cfg.frame_num,
                            max_frames=cfg.max_frames)
    step = max(1, len(jobs) // max(1, sample))
    pairs, pixels, probed = [], [], 0
    for job in list(jobs)[::step][:sample]:
        try:
            info = probe(job.path, folder_fps=cfg.folder_fps)
            first, stop = trim_range(info, job.start, job.end)
            frames = len(selected_indices(info, first, stop, select))
        except (StpipeError, OSError):  # a bad video fails later, in its worker, with its own error
            continue
        probed += 1
        scale = cfg.flow_short_side / max(1, min(info.width, info.height))
        pairs.append(max(0, frames - 1))
        pixels.append(max(2, round(info.width * scale)) * max(2, round(info.height * scale)))
    if not probed:
        return FlowWork(0, 0, 0)
    return FlowWork(round(sum(pairs) / probed * len(jobs)), round(sum(pixels) / probed), probed)


def flow_streams(cfg: ExtractConfig) -> int:
    """Flow pairs computed at once on a node: one per decoder of every worker, at most a core each.
    A worker decodes in one process per core it owns (a Ray worker owns --cpus-per-task), or in
    `decode_threads` threads where it owns one core (pipeline.extraction.decoders.choose)."""
    cores = os.cpu_count() or 1
    if cfg.executor == "ray":
        owned = int(cfg.cpus_per_task)
        per_worker = cfg.decode_procs or (owned if owned >= 2 else cfg.decode_threads)
        return max(1, min(cores, (cfg.workers or 1) * per_worker))
    return max(1, min(cores, cfg.decode_procs or (cores if cores >= 2 else cfg.decode_threads)))


def worker_device_type(cfg: ExtractConfig, method) -> str:
    """Where the run's flow will be computed. Ray workers get GPUs with --gpus-per-worker, or on an
    embedded Ray when this machine has CUDA; on a cluster without that flag the driver cannot tell
    (a worker that finds a GPU compiles anyway: `pipeline.extraction.models.load_models`)."""
    if cfg.executor == "ray" and (cfg.gpus_per_worker > 0 or (not cfg.ray_address and torch_has_cuda())):
        return "cuda"
    return method.device.type


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_flow_compile(cfg: ExtractConfig, jobs: Sequence[VideoJob], method) -> CompileChoice:
    """Compile or eager for this run: the config's `flow_compile` (on/off), else the job's size."""
    streams, warm, device_type = flow_streams(cfg), cache_is_warm(method), worker_device_type(cfg, method)
    if os.environ.get(ENV, "").strip() in ("0", "1"):  # the override: no need to probe
        return choose(0, 0, device_type=device_type, streams=streams, warm=warm)
    if cfg.flow_compile != "auto":
        return CompileChoice(cfg.flow_compile == "on", f"flow_compile={cfg.flow_compile}")
    work = estimate_flow_work(cfg, jobs)
    return choose(work.pairs, work.pixels, device_type=device_type, streams=streams, warm=warm)
