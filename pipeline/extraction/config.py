"""The extract stage's config. `content_fields` decide what a store *is*; the rest is how it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pipeline.config import DEVICE, RAY_ADDRESS, STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class ExtractConfig:
    manifest: str = arg("", "Manifest (.csv or .jsonl).", short="-m")
    root: str = arg("", "Folder the manifest's video paths are relative to (default: its folder).")
    output: str = arg("", "Store path or URL (file://, memory://, s3://...).", short="-o")
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    # what is cached (content: changing any of these makes a different store)
    backbone: str = arg("mobilenet_v2", "Backbone name (see `stpipe backbones`).")
    weights: str = arg("DEFAULT", "DEFAULT, an enum member name, none, or a local .pth file.")
    features: Literal["pooled", "spatial"] = arg("pooled", "Global-pooled vectors or spatial maps.")
    views: str = arg("center", "center, flip, multi3, multi5 or multi10.")
    frames: Literal["all", "step", "fps", "uniform"] = arg("all", "Frame selection.")
    frame_step: int = arg(1, "With --frames step: keep every k-th frame.")
    frame_fps: float = arg(0.0, "With --frames fps: resample to this rate.")
    frame_num: int = arg(0, "With --frames uniform: this many frames.")
    max_frames: int = arg(0, "Cap per video (0 = none).")
    folder_fps: float = 12.0  # frame rate assumed for frame folders
    flow: bool = arg(False, "Also compute and store TV-L1 optical flow.")
    flow_method: str = arg("tvl1", "Flow method (see `stpipe flows`).")
    flow_short_side: int = arg(256, "Shorter side of frames for flow.")
    flow_bound: float = 20.0
    flow_dtype: Literal["uint8", "float16"] = "uint8"
    flow_features: bool = arg(False, "Also cache flow-stream backbone features (a backbone on stacked flow).")
    flow_stack: int = 5
    backbone_checkpoint: str = arg("", "Fine-tuned backbone.pt from `stpipe finetune` (replaces --weights).")
    amp: Literal["", "bf16", "fp16"] = arg("", "Autocast the backbone (CUDA; bf16 also on CPUs with AVX512-BF16/AMX; "
                                               "default float32). Features are stored as float16 either way.")
    # how it runs (free to change between resumed runs)
    # frames per backbone forward, across videos; 0 = 64 on CUDA, 8 on CPU (on CPU mobilenet_v2 runs
    # as fast at 8 as at 32, and the forward's activations take under a third of the memory:
    # benchmarks/README.md, "Stage one's decode path")
    batch_size: int = arg(0, "Frames per backbone forward (0 = 64 on CUDA, 8 on CPU).")
    # frame pairs per TV-L1 call; 0 = 64 on CUDA (a chunk's pairs in one call: the Triton solver runs
    # ~1.5x faster at 128 than at 32, benchmarks/README.md), 16 on CPU (batching barely matters there)
    flow_batch: int = 0
    # TV-L1 kernels on CPU: compiled (minutes once per machine, faster per pair), eager, or auto =
    # whichever finishes this run sooner (pipeline/flow/compile_policy.py); GPUs always compile;
    # STPIPE_FLOW_COMPILE=0/1 overrides
    flow_compile: Literal["auto", "on", "off"] = arg(
        "auto", "torch.compile the TV-L1 kernels: auto = when the run is large enough to pay for it.")
    # decoder processes per compute process (shared-memory ring, pipeline/decoding/pool.py); 0 = one per
    # core the worker owns, or `decode_threads` threads where those are cheaper (one core, one video,
    # flow on a GPU); the choice is printed
    decode_procs: int = arg(0, "Decoder processes per worker (0 = one per core it owns; threads on one core).")
    decode_threads: int = arg(2, "Decoder threads where threads are used.")
    # torch threads of each compute process (its backbone forward on a CPU); 0 = the CPUs it may use,
    # fewer while decoder processes share them and that measures faster (pipeline/extraction/threads.py)
    compute_threads: int = arg(0, "torch threads of each compute process (0 = its CPUs, fewer while decoder "
                                  "processes share them and that measures faster).")
    # where frames are decoded (pipeline/decoding/gpu.py): cpu = the decoders above; nvdec = on the
    # CUDA compute device (JPEG frame folders with nvJPEG, video files with NVDEC through PyNvVideoCodec,
    # the `nvdec` extra; what it cannot decode falls back to the CPU per video); auto = nvdec where the
    # compute device is CUDA and the library is importable, else cpu. The choice is printed
    decoder: Literal["auto", "cpu", "nvdec"] = arg(
        "auto", "Decode on the CPU, or on the CUDA device (nvJPEG for JPEG frame folders, NVDEC for video files: "
                "pip install 'stpipe-video[nvdec]'); auto = nvdec where possible.")
    # a decoder process that sends nothing for this many seconds while it holds a video is killed
    # and the video recorded as failed (a hung decoder); generous: a chunk of CPU TV-L1 takes seconds
    decode_timeout: float = arg(300.0, "Seconds a decoder may go silent on one video before it is killed and the "
                                       "video failed.")
    chunk_frames: int = 64  # decoded frames per chunk (bounds memory on long videos)
    device: str = arg("auto", DEVICE)
    max_retries: int = arg(1, "Retries per video for transient errors.")
    overwrite: bool = arg(False, "Replace a store made by another config.", negatable=False)
    executor: Literal["ray", "local"] = arg("ray", "ray (embedded or cluster) or local (in-process).")
    ray_address: str = arg("", RAY_ADDRESS)
    workers: int = arg(0, "Ray workers (0 = one per GPU, or 1 on CPU-only machines).")
    gpus_per_worker: float = arg(0.0, "GPUs per Ray worker (fractions allowed).")
    cpus_per_task: float = arg(1.0, "CPUs per Ray decode/flow task.")
    # per Ray call at most (2 calls in flight per worker): short videos go many to a call so the
    # per-call drain is paid rarely; bounds pending work and what a lost worker's calls redo
    videos_in_flight: int = 32

    content_fields = (
        "backbone", "weights", "features", "views", "frames", "frame_step", "frame_fps", "frame_num",
        "max_frames", "folder_fps", "flow", "flow_method", "flow_short_side", "flow_bound", "flow_dtype",
        "flow_features", "flow_stack", "backbone_checkpoint", "amp",
    )

    def batch_for(self, device_type: str) -> int:
        """Frames per backbone forward on a device of this type (`batch_size`, or its default)."""
        return self.batch_size or (64 if device_type == "cuda" else 8)

    def flow_batch_for(self, device_type: str) -> int:
        """Frame pairs per TV-L1 call on a device of this type (`flow_batch`, or its default)."""
        return self.flow_batch or (64 if device_type == "cuda" else 16)

    def __post_init__(self) -> None:
        if not self.manifest:
            raise ConfigError("extract needs a manifest (-m/--manifest)")
        if not self.output:
            raise ConfigError("extract needs an output store (-o/--output)")
        for name in ("batch_size", "flow_batch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 1 (or 0 for the device's default), got {getattr(self, name)}")
        for name in ("decode_threads", "chunk_frames", "flow_stack", "flow_short_side"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.compute_threads < 0:
            raise ConfigError(f"compute_threads must be >= 0 (0 = measured), got {self.compute_threads}")
        if self.decode_procs < 0:
            raise ConfigError(f"decode_procs must be >= 0 (0 = one per core), got {self.decode_procs}")
        if self.decode_timeout <= 0:
            raise ConfigError(f"decode_timeout must be > 0 seconds, got {self.decode_timeout}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.flow_features and not self.flow:
            raise ConfigError("flow_features needs flow (--flow)")
        if self.decoder not in ("auto", "cpu", "nvdec"):
            raise ConfigError(f"decoder must be auto, cpu or nvdec, got {self.decoder!r}")
        if self.flow_compile not in ("auto", "on", "off"):
            raise ConfigError(f"flow_compile must be auto, on or off, got {self.flow_compile!r}")
        if self.flow_bound <= 0:
            raise ConfigError(f"flow_bound must be > 0, got {self.flow_bound}")

    def content(self) -> dict[str, Any]:
        # amp joins the content only when set: stores made before the option existed keep their hash
        return {name: getattr(self, name) for name in self.content_fields if name != "amp" or self.amp}

    def with_absolute_paths(self) -> ExtractConfig:
        """Manifest, video root, store, weights file and checkpoint as absolute paths (URLs and the
        named weights unchanged): Ray workers resolve paths in their own working directory."""
        from pipeline.store.urls import absolute

        weights = absolute(self.weights) if is_weights_file(self.weights) else self.weights
        return replace(self, manifest=absolute(self.manifest), root=absolute(self.root), output=absolute(self.output),
                       weights=weights, backbone_checkpoint=absolute(self.backbone_checkpoint))


WEIGHTS_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def is_weights_file(weights: str) -> bool:
    """`weights` names a local file, not DEFAULT, none or a weights enum member (as `resolve_weights` reads it)."""
    if weights.lower() == "none" or (weights.isidentifier() and weights.isupper()):  # DEFAULT, IMAGENET1K_V1, ...
        return False
    return os.sep in weights or Path(weights).suffix in WEIGHTS_FILE_SUFFIXES or Path(weights).is_file()
