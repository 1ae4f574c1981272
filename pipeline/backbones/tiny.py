"""Tiny registered backbones for tests: a few convolutions, seeded, bit-reproducible, milliseconds.

`tiny` (image): three stride-2 3x3 convs, 3 -> 16 -> 32 -> 64 channels, input 64x64 (resize 72),
spatial 64x8x8, pooled 64, a 10-class linear head.
`tiny_video` (video): two 3D convs, 3 -> 16 -> 32 channels, clips of 4 frames every 2 at 32x32
(resize 36), spatial 32x8x8, pooled 32.
`tiny_resnet` (image): a torchvision ResNet of Bottleneck units, two per stage (conv2_x..conv5_x),
widths 4/8/16/32 (outputs 16/32/64/128), with BatchNorm, input 64x64 (resize 72), spatial 128x2x2,
pooled 128: the ResNet structure ST-ResNet's conversion and partial BN work on, in milliseconds.
All use the ImageNet mean/std and have no named weights (`DEFAULT` means the seeded init).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from pipeline.backbones.backbone import GlobalAvgPool, Parts, TemporalMean
from pipeline.backbones.zoo import BACKBONES, IMAGENET_PRESET, resnet

SEED = 0


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.fc = nn.Linear(64, num_classes)


class TinyVideoNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 16, 3, stride=(1, 2, 2), padding=1), nn.ReLU(inplace=True),
            nn.Conv3d(16, 32, 3, stride=(2, 2, 2), padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.fc = nn.Linear(32, num_classes)


class TinyResNet(nn.Module):
    """torchvision's ResNet layout (conv1, bn1, relu, maxpool, layer1..4, fc) at a toy width."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (4, 8, 16, 32), units: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 8
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            out = width * Bottleneck.expansion
            downsample = nn.Sequential(
                nn.Conv2d(channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
            blocks = [Bottleneck(channels, width, stride, downsample)]
            blocks += [Bottleneck(out, width) for _ in range(units - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            channels = out
        self.fc = nn.Linear(channels, num_classes)


def _seeded(cls: type[nn.Module]):
    def make_model(weights: None = None, **kwargs) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # same weights every time, global RNG untouched
            torch.manual_seed(SEED)
            return cls(**kwargs)

    return make_model


def _entry(
    cls: type[nn.Module], *, kind: str, resize: int, crop: int, clip: tuple[int, int] | None = None
) -> dict:
    entry = {
        "kind": kind,
        "source": "stpipe",
        "weights_enum": None,
        "make_model": _seeded(cls),
        "preprocess_source": "ImageNet mean/std (test backbone)",
        "preset": lambda: {**IMAGENET_PRESET, "resize_size": [resize], "crop_size": crop},
    }
    if clip is not None:
        entry["clip_window"], entry["clip_stride"] = clip
    return entry


@BACKBONES.register("tiny", **_entry(TinyNet, kind="image", resize=72, crop=64))
def tiny(m: nn.Module) -> Parts:
    return Parts(trunk=m.features, pool=GlobalAvgPool(), head=m.fc)


@BACKBONES.register("tiny_video", **_entry(TinyVideoNet, kind="video", resize=36, crop=32, clip=(4, 2)))
def tiny_video(m: nn.Module) -> Parts:
    return Parts(trunk=nn.Sequential(m.features, TemporalMean()), pool=GlobalAvgPool(), head=m.fc)


BACKBONES.add("tiny_resnet", resnet, **_entry(TinyResNet, kind="image", resize=72, crop=64))
