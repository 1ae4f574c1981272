"""Typed registry metadata: `BackboneSpec` (how to build a backbone; its `hub` is a `HubWeights` of
hub.py: weights that a library keeps in its own cache).

`BACKBONES.meta(name)` returns the `BackboneSpec`; what a *built* backbone is (feature dims,
preprocessing, weights, MACs) is `describe_backbone` (describe.py) and `Backbone.meta` (the store's
provenance, a plain JSON-able dict).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.backbones.hub import HubWeights

KINDS = ("image", "video")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: what `BACKBONES.register(name, **fields)` takes.

    make_model(weights=<enum member | None>, **kwargs) -> nn.Module (torchvision's `get_model`
    convention); families whose weights are files in a hub cache (`hub`) get the file's path.
    preset() -> the preprocessing when no torchvision enum decides it: resize_size, crop_size,
    mean, std, interpolation (InterpolationMode), antialias.
    """

    kind: str  # "image" (frames) or "video" (clips)
    source: str  # torchvision, timm, open_clip, stpipe, or a plug-in's own word
    make_model: Callable[..., Any]
    preset: Callable[[], dict[str, Any]]
    weights_enum: Any = None  # torchvision's WeightsEnum class, or None
    hub: HubWeights | None = None  # what DEFAULT means for timm/OpenCLIP names
    random_kwargs: Mapping[str, Any] = field(default_factory=dict)
    file_kwargs: Mapping[str, Any] = field(default_factory=dict)
    clip_window: int | None = None  # video backbones: frames per clip
    clip_stride: int | None = None  # and frames between clip starts
    library: str | None = None  # "timm 1.0.31": recorded in provenance
    preprocess_source: str = "ImageNet standard"  # where the preprocessing was read from
    summary: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "video" and (self.clip_window is None or self.clip_stride is None):
            raise ValueError("a video backbone needs clip_window and clip_stride")

