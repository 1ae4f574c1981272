"""`describe_backbone`: what a backbone name is, as `stpipe backbones NAME` prints it.

Built with random weights on the CPU (no cache or network needed): the shapes and multiply-adds do
not depend on the weights; the preprocessing is what the name's weights (or its family's config)
prescribe, exactly what `build_backbone` records in a store's provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.backbones.build import build_backbone
from pipeline.backbones.weights import cache_path
from pipeline.backbones.zoo import BACKBONES, preset_of


@dataclass(frozen=True)
class BackboneCard:
    name: str
    kind: str  # image | video
    source: str  # torchvision, timm, open_clip, stpipe, a plug-in's word
    origin: str  # builtin, family <prefix>, plugin <distribution>
    library: str | None
    weights: str  # what DEFAULT means
    weights_cached: str | None  # where the DEFAULT weights are in the cache, None when absent
    preprocessing: dict[str, Any]  # the store's provenance keys (input_size, resize_size, mean, ...)
    preprocess_source: str
    pooled_dim: int
    spatial_shape: list[int]  # (C, h, w)
    clip: tuple[int, int] | None  # video: frames per clip, between clip starts
    params: int
    macs: int  # multiply-adds per frame (image) or per clip (video), at the input size

    def lines(self) -> list[str]:
        per = "clip" if self.kind == "video" else "frame"
        p = self.preprocessing
        out = [
            f"name           {self.name}",
            f"kind           {self.kind}" + (f" (clips of {self.clip[0]} frames every {self.clip[1]})" if self.clip else ""),
            f"source         {self.source} ({self.origin}{', ' + self.library if self.library else ''})",
            f"weights        DEFAULT = {self.weights}; "
            + (f"cached at {self.weights_cached}" if self.weights_cached else "not in the cache"),
            f"preprocessing  resize {p['resize_size']} {p['interpolation']} (antialias {p['antialias']}), "
            f"centre crop {p['input_size'][0]}, mean {_short(p['mean'])}, std {_short(p['std'])}",
            f"               from {self.preprocess_source}",
            f"features       pooled ({self.pooled_dim},), spatial {tuple(self.spatial_shape)}",
            f"cost           {self.params / 1e6:.1f} M parameters, {self.macs / 1e9:.2f} GMACs per {per}",
        ]
        return out


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _default_weights(name: str) -> tuple[str, str | None]:
    spec = BACKBONES.meta(name)
    if spec.weights_enum is not None:
        member = spec.weights_enum.DEFAULT
        path = cache_path(member)
        return f"{member.name} ({path.name})", str(path) if path.is_file() else None
    if spec.hub is not None:
        found = spec.hub.cached()
        return f"{spec.hub.label} ({spec.source} pretrained)", str(found) if found else None
    return "none (random init)", "-"


def describe_backbone(name: str) -> BackboneCard:
    spec = BACKBONES.meta(name)
    backbone = build_backbone(name, weights="none", features="spatial", device="cpu")
    meta = backbone.meta
    clip = (meta["clip_window"], meta["clip_stride"]) if backbone.kind == "video" else None
    weights, cached = _default_weights(name)
    if spec.weights_enum is not None:  # named weights decide the preprocessing (the card says DEFAULT's)
        backbone.preprocessor = type(backbone.preprocessor)(**preset_of(spec.weights_enum.DEFAULT))
    shape = (1, 3, *((clip[0],) if clip else ()), *meta["input_size"])
    counter = FlopCounterMode(display=False)
    # nn.MultiheadAttention's fused inference path (OpenCLIP) is invisible to the flop counter
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter, torch.inference_mode():
            backbone.trunk(torch.zeros(shape))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    keys = ("input_size", "resize_size", "mean", "std", "interpolation", "antialias")
    return BackboneCard(
        name=name,
        kind=spec.kind,
        source=spec.source,
        origin=BACKBONES.origin(name),
        library=spec.library,
        weights=weights,
        weights_cached=cached,
        preprocessing={k: backbone.preprocessor.meta()[k] for k in keys},
        preprocess_source=spec.preprocess_source,
        pooled_dim=meta["pooled_dim"],
        spatial_shape=[int(meta["feature_shape"][0]), *meta["spatial_size"]],
        clip=clip,
        params=sum(p.numel() for p in backbone.parameters()),
        macs=int(counter.get_total_flops() // 2),
    )
