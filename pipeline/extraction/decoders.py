"""Which decoders a compute process gets: processes or threads, how many, and what they make.

The choice (`choose`) is said as a Note of the run's progress:
  - processes, one per core this worker owns (`decode_procs`, default the cores): decoding is
    mostly per-frame Python around PyAV, which holds the GIL; a process per core decodes ~4x what
    the threads of one process do on 16 cores;
  - threads (`decode_threads`) where they are cheaper: one core, a run of a single video, or flow on
    a GPU (the decoder threads run it on their own CUDA streams; a process each would need its own
    CUDA context).

Where frames are decoded (`place`, `--decoder`): on the CPU as above, or on a CUDA compute device
(`pipeline.decoding.gpu`: nvJPEG for JPEG frame folders, NVDEC for video files), with a CPU pool of
the kind above for what the GPU cannot decode.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.decoding.core import DecodeSpec, default_processes
from pipeline.errors import ConfigError
from pipeline.extraction.config import ExtractConfig
from pipeline.progress import Progress
from pipeline.video import FrameSelection


@dataclass(frozen=True)
class Choice:
    kind: str  # processes | threads
    workers: int
    why: str


def decode_spec(cfg: ExtractConfig, backbone) -> DecodeSpec:
    """What every decoder makes for this backbone: its resize and crops (read from its preprocessor)."""
    pre = backbone.preprocessor
    select = FrameSelection(mode=cfg.frames, step=cfg.frame_step, fps=cfg.frame_fps, num=cfg.frame_num,
                            max_frames=cfg.max_frames)
    interpolation = getattr(getattr(pre, "interpolation", None), "value", "bilinear")
    return DecodeSpec(resize=tuple(int(x) for x in pre.resize_size), crop=int(pre.crop_size), views=cfg.views,
                      select=select, chunk_frames=cfg.chunk_frames, folder_fps=cfg.folder_fps,
                      interpolation=interpolation, flow_short_side=cfg.flow_short_side if cfg.flow else 0,
                      flow_itemsize=1 if cfg.flow_dtype == "uint8" else 2)


def choose(cfg: ExtractConfig, videos: int, flow_method=None, cores: int | None = None) -> Choice:
    cores = cores or default_processes()
    if cfg.flow and flow_method is not None and flow_method.device.type != "cpu":
        return Choice("threads", cfg.decode_threads, f"flow runs on {flow_method.device.type}")
    if cfg.decode_procs:
        return Choice("processes", cfg.decode_procs, "--decode-procs")
    if cores < 2:
        return Choice("threads", cfg.decode_threads, "one core")
    if videos < 2:
        return Choice("threads", cfg.decode_threads, "a single video")
    return Choice("processes", cores, f"{cores} cores")


@dataclass(frozen=True)
class Placement:
    gpu: bool  # decode on the compute device (JPEG folders with nvJPEG)
    nvdec: bool  # video files too (PyNvVideoCodec importable)
    why: str


def place(cfg: ExtractConfig, device) -> Placement:
    """Where frames are decoded (`cfg.decoder`); `nvdec` that cannot be had is a ConfigError, raised
    before any work. `device`: the compute device (a torch.device, or its type as a string)."""
    kind = getattr(device, "type", str(device))
    nvdec = cfg.decoder == "nvdec"
    if cfg.decoder == "cpu":
        return Placement(False, False, "--decoder cpu")
    if kind != "cuda":
        if nvdec:
            raise ConfigError(f"--decoder nvdec needs a CUDA compute device (this run's is {kind}); "
                              "run on a CUDA host (--device cuda) or pass --decoder cpu or auto")
        return Placement(False, False, f"--decoder auto: the compute device is {kind}")
    if cfg.flow:  # TV-L1 reads the decoders' host frames (pipeline/decoding/flow.py)
        if nvdec:
            raise ConfigError("--decoder nvdec does not feed the flow stream (TV-L1 takes CPU-decoded frames); "
                              "pass --decoder cpu or auto with --flow")
        return Placement(False, False, "--decoder auto: flow takes CPU-decoded frames")
    from pipeline.decoding.gpu import NVDEC_INSTALL, nvdec_missing

    missing = nvdec_missing()
    if missing and nvdec:
        raise ConfigError(f"--decoder nvdec needs {missing}; install it ({NVDEC_INSTALL}) or pass --decoder auto")
    if missing:
        return Placement(True, False, f"--decoder auto; video files on the CPU: {missing} ({NVDEC_INSTALL})")
    return Placement(True, True, f"--decoder {cfg.decoder}")


def start(cfg: ExtractConfig, backbone, flow_method, choice: Choice, device, progress: Progress | None = None):
    """(the decode pool, the line that says it): GPU decoders with a CPU pool of `choice` behind them
    where `place` says so, else the CPU pool."""
    placement = place(cfg, device)
    if placement.gpu:
        from pipeline.decoding.gpu import GpuDecoders, NvdecSource, jpeg_works

        jpeg_trouble = jpeg_works(device)
        video = NvdecSource(device) if placement.nvdec else None
        if video is not None or jpeg_trouble is None:
            pool = GpuDecoders(decode_spec(cfg, backbone), device, video=video, jpeg=jpeg_trouble is None,
                               cpu=lambda: build(cfg, backbone, flow_method, choice, device),
                               threads=cfg.decode_threads, progress=progress)
            return pool, f"{pool.describe()} ({placement.why}{'; ' + jpeg_trouble if jpeg_trouble else ''})"
        placement = replace(placement, why=f"{placement.why}; {jpeg_trouble}")
    pool = build(cfg, backbone, flow_method, choice, device)
    why = choice.why if cfg.decoder == "cpu" else f"{choice.why}; {placement.why}"
    return pool, f"{pool.describe()} ({why})"


def build(cfg: ExtractConfig, backbone, flow_method, choice: Choice, device):
    """The CPU decode pool of `choice`, with flow computed in the decoders when the run has flow."""
    from pipeline.decoding.pool import ProcessDecoders, ThreadDecoders

    spec = decode_spec(cfg, backbone)
    if choice.kind == "processes":
        flow = None
        if cfg.flow:
            flow = {"name": flow_method.name, "params": dict(flow_method.params), "device": "cpu",
                    "max_batch": flow_method.max_batch, "compile": getattr(flow_method, "compile", None),
                    "batch": cfg.flow_batch_for("cpu"), "bound": cfg.flow_bound, "dtype": cfg.flow_dtype}
        return ProcessDecoders(spec, choice.workers, flow=flow, timeout=cfg.decode_timeout)
    make_flow = None
    if cfg.flow:
        def make_flow():  # each thread its own method (solvers keep buffers) and, on CUDA, its own stream
            import torch

            from pipeline.decoding.flow import build_stream

            base = flow_method
            stream = torch.cuda.Stream(base.device) if base.device.type == "cuda" else None
            return build_stream(base.name, dict(base.params), device=base.device, max_batch=base.max_batch,
                                compile=getattr(base, "compile", None), batch=cfg.flow_batch_for(base.device.type),
                                bound=cfg.flow_bound, dtype=cfg.flow_dtype, stream=stream)
    return ThreadDecoders(spec, choice.workers, flow=make_flow)
