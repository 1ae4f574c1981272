"""`torchvision:NAME`: any `torchvision.models` classification or video model (`get_model` and its
weights enum: `DEFAULT`, a member name such as `IMAGENET1K_V2`, `none` or a file, as for the
built-in names; the preprocessing is the weights' own `transforms()`).

The split into trunk / pool / head is chosen by architecture family below (pooled = the model's own
pre-logits vector; spatial = the map before the final pooling, or ViT patch tokens on their grid).
Names stpipe registers itself (`mobilenet_v2`, ...) use the same split as their registered entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
from torch import nn
from torchvision import models

from pipeline.backbones import zoo
from pipeline.backbones.backbone import GlobalAvgPool, Parts, TemporalMean, TokenMap
from pipeline.backbones.families import similar
from pipeline.errors import BackboneError

VIDEO_CLIP = (16, 8)  # frames per clip, between clip starts: the Kinetics recipes' 16-frame clips


class _Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class _ViTTokens(nn.Module):
    """torchvision's VisionTransformer up to its encoder's final norm: (N, 1 + h*w, D) tokens."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit._process_input(x)
        cls = self.vit.class_token.expand(x.shape[0], -1, -1)
        return self.vit.encoder(torch.cat([cls, x], dim=1))


class _ClassToken(nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]


def _vit(m: nn.Module) -> Parts:
    return Parts(trunk=_ViTTokens(m), pool=_ClassToken(), head=m.heads, spatial=TokenMap(1))


def _regnet(m: nn.Module) -> Parts:
    return Parts(trunk=nn.Sequential(m.stem, m.trunk_output), pool=GlobalAvgPool(), head=m.fc)


def _densenet(m: nn.Module) -> Parts:
    return Parts(trunk=nn.Sequential(m.features, nn.ReLU()), pool=GlobalAvgPool(), head=m.classifier)


def _shufflenet(m: nn.Module) -> Parts:
    trunk = nn.Sequential(m.conv1, m.maxpool, m.stage2, m.stage3, m.stage4, m.conv5)
    return Parts(trunk=trunk, pool=GlobalAvgPool(), head=m.fc)


def _mnasnet(m: nn.Module) -> Parts:
    return Parts(trunk=m.layers, pool=GlobalAvgPool(), head=m.classifier)


def _swin(m: nn.Module) -> Parts:
    return Parts(trunk=nn.Sequential(m.features, m.norm, m.permute), pool=GlobalAvgPool(), head=m.head)


def _maxvit(m: nn.Module) -> Parts:
    # classifier = pool, flatten, LayerNorm, Linear, Tanh (the pre-logits), Linear
    return Parts(trunk=nn.Sequential(m.stem, *m.blocks), pool=m.classifier[:-1], head=m.classifier[-1])


def _vgg(m: nn.Module) -> Parts:
    # VGG/AlexNet classify the flattened (7, 7) map with an MLP: pooled = the last hidden layer (fc7)
    pool = nn.Sequential(m.avgpool, nn.Flatten(1), m.classifier[:-1])
    return Parts(trunk=m.features, pool=pool, head=m.classifier[-1])


def _swin3d(m: nn.Module) -> Parts:
    trunk = nn.Sequential(m.patch_embed, m.pos_drop, m.features, m.norm, _Permute(0, 4, 1, 2, 3), TemporalMean())
    return Parts(trunk=trunk, pool=GlobalAvgPool(), head=m.head)


# name prefix -> split; the first match wins (longest prefixes first where they overlap)
SPLITS: list[tuple[str, Callable[[nn.Module], Parts]]] = [
    ("resnet", zoo.resnet), ("resnext", zoo.resnet), ("wide_resnet", zoo.resnet),
    ("mobilenet_", zoo.features_classifier), ("efficientnet_", zoo.features_classifier),
    ("convnext_", zoo.convnext_tiny), ("squeezenet", zoo.squeezenet1_1), ("googlenet", zoo.googlenet),
    ("regnet_", _regnet), ("densenet", _densenet), ("shufflenet_v2", _shufflenet), ("mnasnet", _mnasnet),
    ("swin_", _swin), ("maxvit", _maxvit), ("vgg", _vgg), ("alexnet", _vgg), ("vit_", _vit),
    ("r3d_", zoo.video_resnet), ("mc3_", zoo.video_resnet), ("r2plus1d_", zoo.video_resnet),
    ("s3d", zoo.s3d), ("swin3d_", _swin3d),
]  # fmt: skip


def resolve(name: str) -> tuple[Callable[[nn.Module], Parts], dict[str, Any]]:
    if name in zoo.BACKBONES and zoo.BACKBONES.meta(name).source == "torchvision":
        return zoo.BACKBONES.get(name), _builtin(name)
    available = models.list_models()
    if name not in available:
        raise BackboneError(f"torchvision has no model {name!r}{similar(name, available)}")
    video = name in models.list_models(module=models.video)
    split = next((f for prefix, f in SPLITS if name.startswith(prefix)), None)
    if split is None:
        supported = sorted({prefix.rstrip("_") for prefix, _ in SPLITS})
        raise BackboneError(
            f"torchvision:{name}: no feature split for this architecture (families: {', '.join(supported)})"
        )
    extra: dict[str, Any] = {}
    if name.startswith("googlenet"):
        extra = {key: value for key, value in _builtin("googlenet").items() if key.endswith("_kwargs")}
    entry = zoo.torchvision_entry(name, kind="video" if video else "image", clip=VIDEO_CLIP if video else None)
    return split, {**entry, **extra}


def _builtin(name: str) -> dict[str, Any]:
    spec = zoo.BACKBONES.meta(name)
    return {f.name: getattr(spec, f.name) for f in fields(spec)}  # shallow: asdict would copy the callables
