"""`BACKBONES`: one registered function per backbone, splitting a built model into `Parts`.

Registry metadata is a `BackboneSpec` (spec.py) saying how to build the model: `kind` ("image" or
"video"), `weights_enum` (torchvision's enum, None for our own models), `make_model(weights=...,
**kwargs)`, extra builder kwargs for random init and for local files, the preprocessing `preset`
used when no named weights decide it, and the default clip window/stride of video backbones.

Beyond these names: the families `torchvision:NAME` (torchvision_family.py), `timm:NAME[.TAG]`
(timm_family.py) and `open_clip:MODEL/TAG` (open_clip_family.py), registered by the package's
__init__.py (torchvision_family builds on this module) and resolved on first use, and plug-ins (entry points in the group `stpipe.backbones`, see pipeline/registry.py).

Pooled features are each architecture's own pre-logits vector: the global average of the spatial map
everywhere except ConvNeXt, whose pooled vector is also layer-normed (its classifier's LayerNorm).
SqueezeNet classifies with a 1x1 convolution before pooling, so its logits need the spatial map.
The BN-Inception of Köpüklü et al. is not in torchvision; GoogLeNet (Inception v1) stands in for it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights
from torchvision.transforms import InterpolationMode

from pipeline.backbones.backbone import ChannelAffine, GlobalAvgPool, Parts, TemporalMean
from pipeline.backbones.spec import BackboneSpec
from pipeline.registry import Registry

BACKBONES: Registry[Callable[[nn.Module], Parts]] = Registry(
    "backbone", meta_type=BackboneSpec, plugins="stpipe.backbones"
)

IMAGENET_PRESET: dict[str, Any] = {
    "resize_size": [256],
    "crop_size": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": InterpolationMode.BILINEAR,
    "antialias": True,
}


def preset_of(member: WeightsEnum) -> dict[str, Any]:
    """The preprocessing of torchvision weights, read off their own `transforms()`."""
    t = member.transforms()
    return {
        "resize_size": list(t.resize_size),
        "crop_size": int(t.crop_size[0]),
        "mean": list(t.mean),
        "std": list(t.std),
        "interpolation": t.interpolation,
        # VideoClassification hard-codes antialias=False; ImageClassification stores its flag
        "antialias": bool(getattr(t, "antialias", False)),
    }


def torchvision_entry(
    name: str, *, kind: str = "image", clip: tuple[int, int] | None = None, **extra: Any
) -> dict:
    enum_cls = get_model_weights(name)
    entry = {
        "kind": kind,
        "source": "torchvision",
        "weights_enum": enum_cls,
        "make_model": partial(get_model, name),
        # without named weights: ImageNet's standard input for images, the Kinetics weights' for video
        "preset": (lambda: dict(IMAGENET_PRESET))
        if kind == "image"
        else partial(preset_of, enum_cls.DEFAULT),
        "library": f"torchvision {torchvision.__version__}",
        "preprocess_source": f"torchvision {enum_cls.__name__} transforms (ImageNet standard without weights)"
        if kind == "image"
        else f"torchvision {enum_cls.DEFAULT} transforms",
        **extra,
    }
    if clip is not None:
        entry["clip_window"], entry["clip_stride"] = clip
    return entry


# -- image backbones ----------------------------------------------------------------------------


@BACKBONES.register("squeezenet1_1", **torchvision_entry("squeezenet1_1"))
def squeezenet1_1(m: nn.Module) -> Parts:
    return Parts(
        trunk=m.features,
        pool=GlobalAvgPool(),
        head=None,
        spatial_head=nn.Sequential(m.classifier, nn.Flatten(1)),
    )


# torchvision's googlenet transform_input: ImageNet-normalised input -> (x - 0.5) / 0.5
_GOOGLENET_SCALE = [0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]
_GOOGLENET_SHIFT = [(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5]


@BACKBONES.register(
    "googlenet",
    **torchvision_entry(
        "googlenet",
        random_kwargs={"aux_logits": False, "init_weights": True},
        # torchvision's own googlenet files expect transform_input=True, like its named weights
        file_kwargs={"aux_logits": False, "init_weights": False, "transform_input": True},
    ),
)
def googlenet(m: nn.Module) -> Parts:
    names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b"]  # fmt: skip
    # always present (identity without transform_input) so saved Backbone state dicts keep their
    # key names and carry whether the input transform applies
    stem = (
        ChannelAffine(_GOOGLENET_SCALE, _GOOGLENET_SHIFT)
        if m.transform_input
        else ChannelAffine([1.0] * 3, [0.0] * 3)
    )
    layers = [stem] + [getattr(m, n) for n in names]
    return Parts(trunk=nn.Sequential(*layers), pool=GlobalAvgPool(), head=nn.Sequential(m.dropout, m.fc))


def resnet(m: nn.Module) -> Parts:
    trunk = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    return Parts(trunk=trunk, pool=GlobalAvgPool(), head=m.fc)


BACKBONES.add("resnet18", resnet, **torchvision_entry("resnet18"))
BACKBONES.add("resnet50", resnet, **torchvision_entry("resnet50"))


def features_classifier(m: nn.Module) -> Parts:
    """MobileNet v2/v3 and EfficientNet: `features`, global average, `classifier`."""
    return Parts(trunk=m.features, pool=GlobalAvgPool(), head=m.classifier)


BACKBONES.add("mobilenet_v2", features_classifier, **torchvision_entry("mobilenet_v2"))
BACKBONES.add("mobilenet_v3_large", features_classifier, **torchvision_entry("mobilenet_v3_large"))
BACKBONES.add("efficientnet_b0", features_classifier, **torchvision_entry("efficientnet_b0"))


@BACKBONES.register("convnext_tiny", **torchvision_entry("convnext_tiny"))
def convnext_tiny(m: nn.Module) -> Parts:
    norm, flatten, linear = m.classifier
    return Parts(trunk=m.features, pool=nn.Sequential(m.avgpool, norm, flatten), head=linear)


# -- video backbones: clips (N, 3, T, H, W); window/stride = frames per clip / between clip starts --


def video_resnet(m: nn.Module) -> Parts:
    trunk = nn.Sequential(m.stem, m.layer1, m.layer2, m.layer3, m.layer4, TemporalMean())
    return Parts(trunk=trunk, pool=GlobalAvgPool(), head=m.fc)


BACKBONES.add("r3d_18", video_resnet, **torchvision_entry("r3d_18", kind="video", clip=(16, 8)))
BACKBONES.add("r2plus1d_18", video_resnet, **torchvision_entry("r2plus1d_18", kind="video", clip=(16, 8)))


@BACKBONES.register("s3d", **torchvision_entry("s3d", kind="video", clip=(16, 8)))
def s3d(m: nn.Module) -> Parts:
    # torchvision averages (2, 7, 7) windows then the class scores; at its 16x224 input that is
    # exactly the global mean used here, which also works at other sizes
    head = nn.Sequential(nn.Unflatten(1, (-1, 1, 1, 1)), m.classifier, nn.Flatten(1))
    return Parts(trunk=nn.Sequential(m.features, TemporalMean()), pool=GlobalAvgPool(), head=head)
