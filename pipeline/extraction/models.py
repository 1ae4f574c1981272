"""Stage one's models, built in one place: backbone, flow method and flow-stream backbone.

Every process that extracts (the in-process executor, each Ray actor, `stpipe predict`) calls
`load_models` once; the driver of a Ray run builds none (`load_meta_models`: metadata only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.errors import ConfigError
from pipeline.extraction.config import ExtractConfig
from pipeline.progress import Note, Progress, emitter


class Models(NamedTuple):
    device: Any  # torch.device
    backbone: Any
    flow_method: Any | None
    flow_backbone: Any | None


def load_models(cfg: ExtractConfig, device=None) -> Models:
    """Backbone, flow method and optional flow-stream backbone as the config asks, on `device`."""
    from pipeline.device import pick_device  # torch: imported when models are built, not on a no-op re-run

    device = device or pick_device(cfg.device)
    backbone, flow_backbone = _backbones(cfg, device)
    return Models(device, backbone, _flow_method(cfg, device), flow_backbone)


def load_meta_models(cfg: ExtractConfig) -> Models:
    """What the driver of a Ray run needs to describe the models and plan the flow compile, building
    nothing it would run: the backbones on torch's meta device (no parameter memory, nothing on a GPU;
    their metadata is the same as on any device) and the flow method on the CPU (parameters only)."""
    import warnings

    import torch

    meta = torch.device("meta")
    with meta, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # weights loaded into meta tensors: a no-op, as meant
        backbone, flow_backbone = _backbones(cfg, meta)
    return Models(meta, backbone, _flow_method(cfg, torch.device("cpu")), flow_backbone)


def _backbones(cfg: ExtractConfig, device) -> tuple[Any, Any | None]:
    from pipeline.backbones import build_backbone

    weights = cfg.backbone_checkpoint or cfg.weights
    amp = cfg.amp or None
    backbone = build_backbone(cfg.backbone, weights=weights, features=cfg.features, device=device, amp=amp,
                              **checkpoint_preprocessing(cfg))
    flow_backbone = None
    if cfg.flow_features:
        from pipeline.backbones import build_flow_backbone

        flow_backbone = build_flow_backbone(cfg.backbone, stack=cfg.flow_stack, weights=cfg.weights,
                                            features=cfg.features, device=device, amp=amp)
    return backbone, flow_backbone


def _flow_method(cfg: ExtractConfig, device):
    flow_method = None
    if cfg.flow:
        from pipeline.flow import FLOWS, build_flow

        torch_flow = FLOWS.meta(cfg.flow_method).get("backend") == "torch"
        # "off" (said or decided for the run's size) means eager on CPUs; other devices always compile
        # (compile_policy), unless STPIPE_FLOW_COMPILE=0, which kernels.Compiled honours everywhere
        options = {"compile": cfg.flow_compile != "off" or device.type != "cpu"} if torch_flow else {}
        flow_method = build_flow(cfg.flow_method, device=device, max_batch=cfg.flow_batch_for(device.type),
                                 **options)
    return flow_method


def checkpoint_preprocessing(cfg: ExtractConfig) -> dict:
    """A fine-tuned backbone.pt from `stpipe finetune` has a .json sidecar: keep the preprocessing it was
    trained with (the weights' own transforms, not the generic ones a plain file gets) and its backbone."""
    sidecar = Path(cfg.backbone_checkpoint).with_suffix(".json") if cfg.backbone_checkpoint else None
    if sidecar is None or not sidecar.is_file():
        return {}
    info = json.loads(sidecar.read_text())
    if info.get("modality", "rgb") != "rgb":
        raise ConfigError(f"--backbone-checkpoint {cfg.backbone_checkpoint} is a {info['modality']}-stream backbone; "
                          "pass the appearance stream's backbone.pt")
    if info.get("name") != cfg.backbone:
        raise ConfigError(f"--backbone-checkpoint {cfg.backbone_checkpoint} was fine-tuned from {info.get('name')}; "
                          f"pass --backbone {info.get('name')} (got {cfg.backbone})")
    return {"resize_size": info["resize_size"], "crop_size": info["crop_size"]}


def warm_flow_compile(method, progress: Progress | None = None) -> float:
    """Compile the CPU TV-L1 kernels in this process before any worker needs them (seconds taken);
    a warm inductor disk cache answers in seconds."""
    from pipeline.flow.compile_policy import cache_is_warm, warm_up

    emit = emitter(progress)
    warm = cache_is_warm(method)
    emit(Note("TV-L1: loading the compiled kernels from inductor's disk cache" if warm else
              "TV-L1: compiling the kernels once on this machine before extracting (1-3 min cold)", source=""))
    seconds = warm_up(method)
    emit(Note(f"TV-L1: kernels ready in {seconds:.0f} s", source=""))
    return seconds


def models_provenance(cfg: ExtractConfig, models: Models) -> dict[str, Any]:
    """The store's provenance of these models (backbone, flow method and parameters, flow stream, views)."""
    flow = None
    if cfg.flow:
        flow = {"method": cfg.flow_method, "params": dict(getattr(models.flow_method, "params", None) or {}),
                "short_side": cfg.flow_short_side, "bound": cfg.flow_bound, "quantisation": cfg.flow_dtype}
        if models.flow_backbone is not None:
            flow["backbone"] = dict(models.flow_backbone.meta)
    return {"backbone": dict(models.backbone.meta), "flow": flow, "views": cfg.views}
