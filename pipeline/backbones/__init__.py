"""Backbones for stage one: torchvision image and video networks split into trunk/pool/head.

    from pipeline.backbones import build_backbone
    backbone = build_backbone("mobilenet_v2", weights="IMAGENET1K_V1", features="spatial")
    x = backbone.preprocess(frames_uint8)          # (N, 3, 224, 224), on the frames' device
    feats = backbone.forward_features(x.to(backbone.device))   # (N, 1280, 7, 7)
    backbone.meta                                   # provenance for the store

Names: the registered ones (`stpipe backbones`), `torchvision:NAME`, `timm:NAME[.TAG]`,
`open_clip:MODEL/TAG` (families resolved on first use) and plug-ins (entry points
`stpipe.backbones`).

Modules: `zoo` (the registry and torchvision entries; the families are registered here), `spec` (the typed registry metadata),
`tiny` (test backbones), `torchvision_family` / `timm_family` / `open_clip_family` (the library
families; `families`: their optional imports), `build` (builders, flow stream), `weights`
(resolution, offline cache check, files), `hub` (Hugging Face / torch hub cache files),
`preprocess` (batched input pipelines), `clips` (sliding windows of video backbones), `backbone`
(the module), `describe` (what `stpipe backbones NAME` prints).
"""

import importlib
from collections.abc import Callable

from pipeline.backbones import tiny as _tiny  # noqa: F401  (registers the tiny test backbones)
from pipeline.backbones.backbone import Backbone, Parts
from pipeline.backbones.build import (
    FEATURE_KINDS,
    build_backbone,
    build_backbone_from_meta,
    build_flow_backbone,
    cross_modality_weight,
)
from pipeline.backbones.clips import clip_index
from pipeline.backbones.preprocess import FlowPreprocess, ImagePreprocess, stack_flow
from pipeline.backbones.weights import cache_path, resolve_weights
from pipeline.backbones.zoo import BACKBONES

# -- families: whole libraries, resolved on first use (their modules import lazily) -----------------
# registered here, not in zoo.py: torchvision_family builds on zoo's entries


def _family(module: str) -> Callable[[str], tuple[Callable[..., Parts], dict]]:
    return lambda rest: importlib.import_module(f"pipeline.backbones.{module}").resolve(rest)


BACKBONES.add_family("torchvision", _family("torchvision_family"),
                     summary="any torchvision.models classification or video model")  # fmt: skip
BACKBONES.add_family("timm", _family("timm_family"),
                     summary="any timm model, NAME[.TAG], pip install 'stpipe-video[timm]'")  # fmt: skip
BACKBONES.add_family("open_clip", _family("open_clip_family"),
                     summary="an OpenCLIP image tower, MODEL/PRETRAINED, pip install 'stpipe-video[clip]'")  # fmt: skip

__all__ = [
    "BACKBONES",
    "FEATURE_KINDS",
    "Backbone",
    "FlowPreprocess",
    "ImagePreprocess",
    "Parts",
    "build_backbone",
    "build_backbone_from_meta",
    "build_flow_backbone",
    "cache_path",
    "clip_index",
    "cross_modality_weight",
    "resolve_weights",
    "stack_flow",
]
