"""`build_backbone` and `build_flow_backbone`: registry name + weights -> a ready `Backbone`.

The flow stream is the two-stream motion network (seed 003, TSN): the same image backbone whose
first convolution takes L stacked flow fields (2L channels), initialised by averaging the RGB
filters over colour and replicating that average over the 2L channels (TSN's cross-modality
initialisation), then fed by `FlowPreprocess`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from pipeline.backbones.allocator import reuse_freed_memory
from pipeline.backbones.backbone import Backbone
from pipeline.backbones.preprocess import FlowPreprocess, ImagePreprocess
from pipeline.backbones.spec import BackboneSpec
from pipeline.backbones.weights import (
    ResolvedWeights,
    ensure_cached,
    file_sha256,
    load_into,
    read_state_dict,
    resolve_weights,
    url_filename,
)
from pipeline.backbones.zoo import BACKBONES, preset_of
from pipeline.device import pick_device
from pipeline.errors import BackboneError, ConfigError

FEATURE_KINDS = ("pooled", "spatial")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
RANDOM_INIT_SEED = 0


def build_backbone(
    name: str,
    *,
    weights: str | os.PathLike | None = "DEFAULT",
    features: str = "pooled",
    in_channels: int = 3,
    device: str | torch.device | None = None,
    clip_window: int | None = None,
    clip_stride: int | None = None,
    resize_size: int | list[int] | None = None,
    crop_size: int | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
    download: bool = False,
) -> Backbone:
    """Build a registered backbone as a frozen feature extractor.

    Args:
        name: a name in `BACKBONES` (`BACKBONES.names()`).
        weights: `DEFAULT`, an enum member name (`IMAGENET1K_V1`), `none` (random init), or a
            local state-dict file (torchvision's key names or a saved `Backbone`'s).
        features: `pooled` -> (N, D) vectors, `spatial` -> (N, C, h, w) maps (final pooling removed).
        in_channels: input channels; other than 3, the first convolution is rebuilt with the
            colour-averaged RGB filters (cross-modality init) and mean/std are colour-averaged.
        device: `auto`/None picks CUDA when present.
        clip_window, clip_stride: frames per clip and between clip starts (video backbones).
        resize_size, crop_size: override the weights' preprocessing (e.g. resize 256 for multi-crop).
        amp: `bf16` or `fp16` autocast in `forward_features` (for CUDA), None = float32.
        channels_last: NHWC memory format for image backbones; default on (CUDA's usual win, and
            1.2-1.9x frames/s for mobilenet_v2 on a 2-core CPU, see benchmarks/bench_backbones.py).
        download: allow torchvision to download missing named weights (with a timeout); by
            default a missing file is an error saying where to put it.
    """
    channels = int(in_channels)
    if channels == 3:
        make_preprocessor = _rgb_preprocessor
    else:

        def make_preprocessor(preset: dict) -> ImagePreprocess:
            grey = {k: [sum(preset[k]) / 3.0] * channels for k in ("mean", "std")}
            return ImagePreprocess(**{**preset, **grey})

    return _build(
        name, weights=weights, features=features, in_channels=channels, device=device,
        clip_window=clip_window, clip_stride=clip_stride, resize_size=resize_size, crop_size=crop_size,
        amp=amp, channels_last=channels_last, download=download, make_preprocessor=make_preprocessor,
    )  # fmt: skip


def build_flow_backbone(
    name: str,
    *,
    stack: int = 5,
    bound: float = 20.0,
    weights: str | os.PathLike | None = "DEFAULT",
    features: str = "pooled",
    device: str | torch.device | None = None,
    resize_size: int | list[int] | None = None,
    crop_size: int | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
    download: bool = False,
) -> Backbone:
    """The motion stream: an image backbone on L stacked flow fields (2L input channels).

    `weights` are RGB weights (converted by cross-modality init) or a flow-stream file whose first
    convolution already has 2L channels. Input convention: see `FlowPreprocess` (flow in pixels,
    clipped at +-bound, scaled to [-1, 1]); `meta` records stack, bound and scaling.
    """
    if stack < 1:
        raise ConfigError(f"flow stack must be >= 1 field, got {stack}")
    if BACKBONES.meta(name).kind != "image":
        raise BackboneError(f"the flow stream needs an image backbone, {name} is a video backbone")

    def make_preprocessor(preset: dict) -> FlowPreprocess:
        return FlowPreprocess(
            resize_size=preset["resize_size"], crop_size=preset["crop_size"], stack=stack, bound=bound
        )

    return _build(
        name, weights=weights, features=features, in_channels=2 * stack, device=device,
        clip_window=None, clip_stride=None, resize_size=resize_size, crop_size=crop_size,
        amp=amp, channels_last=channels_last, download=download, make_preprocessor=make_preprocessor,
    )  # fmt: skip


def build_backbone_from_meta(meta: dict[str, Any], *, device: str | torch.device | None = None) -> Backbone:
    """Rebuild exactly the backbone a store recorded (same weights, features and preprocessing)."""
    recorded = meta.get("weights_sha256")
    if recorded is not None:  # a local file: it must still be the very same file
        path = Path(meta["weights"])
        if not path.is_file() or file_sha256(path) != recorded:
            raise BackboneError(
                f"weights file {path} is missing or changed since the store was made (sha256 {recorded})"
            )
    common = {
        "weights": meta["weights"],
        "features": meta["features"],
        "device": device,
        "resize_size": meta["resize_size"],
        "crop_size": meta["input_size"][0],
        "amp": meta.get("amp"),
    }
    if meta.get("modality") == "flow":
        return build_flow_backbone(meta["name"], stack=meta["flow_stack"], bound=meta["flow_bound"], **common)
    return build_backbone(
        meta["name"], in_channels=meta["in_channels"],
        clip_window=meta.get("clip_window"), clip_stride=meta.get("clip_stride"), **common,
    )  # fmt: skip


# -- assembly ---------------------------------------------------------------------------------------


def _rgb_preprocessor(preset: dict) -> ImagePreprocess:
    return ImagePreprocess(**preset)


def _build(
    name: str,
    *,
    weights: Any,
    features: str,
    in_channels: int,
    device: Any,
    clip_window: int | None,
    clip_stride: int | None,
    resize_size: int | list[int] | None,
    crop_size: int | None,
    amp: str | None,
    channels_last: bool | None,
    download: bool,
    make_preprocessor: Callable[[dict], Any],
) -> Backbone:
    split = BACKBONES.get(name)
    spec = BACKBONES.meta(name)
    if features not in FEATURE_KINDS:
        raise ConfigError(f"features must be one of {', '.join(FEATURE_KINDS)}, got {features!r}")
    if amp is not None and amp not in AMP_DTYPES:
        raise ConfigError(f"amp must be one of {', '.join(AMP_DTYPES)} or None, got {amp!r}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    target = pick_device(device)
    if target.type == "cpu":
        reuse_freed_memory()  # no page faults per batch (see allocator.py)

    resolved = resolve_weights(
        name, weights, spec.weights_enum, hub=spec.hub is not None, random_default=spec.source == "stpipe"
    )
    model, hub_file = _make_model(name, spec, resolved, download=download)
    backbone = Backbone(
        split(model),
        features=features,
        kind=spec.kind,
        channels_last=True if channels_last is None else channels_last,
        amp_dtype=AMP_DTYPES.get(amp) if amp else None,
    )
    if in_channels != 3:
        cross_modality(backbone, in_channels, also=model)  # the model too: a file may load through it
    head_loaded = resolved.enum is not None or (resolved.hub and backbone.head is not None)
    if resolved.file is not None:
        head_loaded = _load_file(name, model, backbone, resolved, in_channels)

    preset = preset_of(resolved.enum) if resolved.enum is not None else spec.preset()
    if resize_size is not None:
        preset["resize_size"] = [resize_size] if isinstance(resize_size, int) else list(resize_size)
    if crop_size is not None:
        preset["crop_size"] = int(crop_size)
    backbone.preprocessor = make_preprocessor(preset)
    clip = _clip(spec, clip_window, clip_stride)
    backbone.meta = {
        "name": name,
        "kind": spec.kind,
        "source": spec.source,
        "weights": resolved.label,
        "weights_file": url_filename(resolved.enum)
        if resolved.enum is not None and resolved.file is None
        else (str(hub_file) if hub_file is not None else None),
        "weights_sha256": resolved.sha256,
        "weights_preset": resolved.enum.name if resolved.enum is not None else None,  # whose transforms
        "head_loaded": head_loaded,
        "features": features,
        "in_channels": in_channels,
        **backbone.preprocessor.meta(),
        **_shapes(name, backbone, in_channels, preset["crop_size"], clip),
        **({"clip_window": clip[0], "clip_stride": clip[1]} if clip else {}),
        "amp": amp,
        "torchvision": torchvision.__version__,
        "library": spec.library,
        "preprocess_source": spec.preprocess_source,
    }
    backbone.to(target)
    if backbone.channels_last:
        backbone.to(memory_format=torch.channels_last)
    return backbone


def _make_model(
    name: str, spec: BackboneSpec, resolved: ResolvedWeights, *, download: bool
) -> tuple[nn.Module, Path | None]:
    """The model, and the hub cache file its weights came from (timm, OpenCLIP)."""
    if resolved.file is not None:
        return _call(name, spec.make_model, weights=None, **spec.file_kwargs), None
    if resolved.hub:
        path = spec.hub.locate(name, download=download)
        return _call(name, spec.make_model, weights=path, _label=f"weights {resolved.label} from {path}"), path
    if resolved.enum is None:
        # seeded: `--weights none` is the same network in every run, so a resumed store stays one
        # network's features (and leaves the caller's RNG alone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return _call(name, spec.make_model, weights=None, **spec.random_kwargs), None
    path = ensure_cached(name, resolved.enum, download=download)
    # torchvision's own loading, from the cache file we just checked
    return _call(name, spec.make_model, weights=resolved.enum, _label=f"weights {resolved.label}: {path}"), None


def _call(name: str, make_model: Callable[..., nn.Module], *, _label: str = "", **kwargs: Any) -> nn.Module:
    """A library's model builder; its failures (bad kwargs, a file that does not fit) as one line."""
    try:
        return make_model(**kwargs)
    except BackboneError:
        raise
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BackboneError(f"{name}: cannot build{' with ' + _label if _label else ''}: {message}") from None


def _load_file(
    name: str, model: nn.Module, backbone: Backbone, resolved: ResolvedWeights, in_channels: int
) -> bool:
    state = _within(read_state_dict(resolved.file), [model, backbone])
    classifier = [m for m in (backbone.head, backbone.spatial_head) if m is not None]
    optional = {id(t) for m in classifier for t in itertools.chain(m.parameters(), m.buffers())}
    stem = first_conv(backbone)

    def adapt(own: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        # an RGB file loaded into a flow stream: convert its first convolution like named weights
        if own is stem.weight and value.ndim == own.ndim and value.shape[1] == 3 and in_channels != 3:
            return cross_modality_weight(value, in_channels)
        return value

    return load_into(
        [model, backbone], state, optional=optional, adapt=adapt, source=str(resolved.file), name=name
    )


def _within(state: dict[str, torch.Tensor], candidates: list[nn.Module]) -> dict[str, torch.Tensor]:
    """A whole model's file for the part we keep (OpenCLIP's `visual.` keys of a full CLIP file):
    the file's keys as they are, or those under one top-level prefix, whichever fits best."""
    own = set().union(*(m.state_dict().keys() for m in candidates))
    best, fit = state, len(state.keys() & own)
    for prefix in dict.fromkeys(k.split(".", 1)[0] + "." for k in state if "." in k):
        inner = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if len(inner.keys() & own) > fit:
            best, fit = inner, len(inner.keys() & own)
    return best


def _clip(spec: BackboneSpec, window: int | None, stride: int | None) -> tuple[int, int] | None:
    if spec.kind != "video":
        return None
    window = spec.clip_window if window is None else int(window)
    stride = spec.clip_stride if stride is None else int(stride)
    if window < 1 or stride < 1:
        raise ConfigError(f"clip window and stride must be >= 1, got {window} and {stride}")
    return window, stride


# -- cross-modality initialisation ------------------------------------------------------------------


def first_conv(backbone: Backbone) -> nn.Conv2d | nn.Conv3d:
    for module in backbone.trunk.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return module
    raise BackboneError(f"{backbone.meta.get('name', 'backbone')} has no convolution to take other inputs")


def cross_modality_weight(rgb_weight: torch.Tensor, channels: int) -> torch.Tensor:
    """(O, 3, k...) RGB filters -> (O, channels, k...): the colour mean replicated (TSN)."""
    shape = list(rgb_weight.shape)
    shape[1] = channels
    return rgb_weight.mean(dim=1, keepdim=True).expand(shape).contiguous()


def cross_modality(backbone: Backbone, channels: int, *, also: nn.Module | None = None) -> None:
    """Rebuild the first convolution for `channels` inputs and drop RGB-only input transforms.

    `also`: another module sharing the convolution (the torchvision model) to update the same way.
    """
    old = first_conv(backbone)
    new = type(old)(
        channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, groups=old.groups, bias=old.bias is not None, padding_mode=old.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(cross_modality_weight(old.weight, channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(not backbone.frozen)
    roots = [backbone.trunk] if also is None else [backbone.trunk, also]
    for parent in [m for root in roots for m in root.modules()]:
        for child_name, child in parent.named_children():
            if child is old:
                setattr(parent, child_name, new)
            elif getattr(child, "rgb_only", False):
                setattr(parent, child_name, nn.Identity())


# -- shapes ---------------------------------------------------------------------------------------


def _shapes(
    name: str, backbone: Backbone, in_channels: int, crop: int, clip: tuple[int, int] | None
) -> dict[str, Any]:
    """Feature shapes at the input size, found by a forward pass on the meta device (no compute)."""
    shape = (1, in_channels, *((clip[0],) if clip else ()), crop, crop)
    try:
        spatial, pooled = _meta_forward(_Both(backbone), torch.empty(shape, device="meta"))
    except Exception as error:  # e.g. a ViT built for another input size than --crop asks
        message = (str(error).splitlines() or [type(error).__name__])[0]
        raise BackboneError(f"{name} does not run on {in_channels}x{crop}x{crop} inputs: {message}") from None
    shape = list(pooled.shape[1:]) if backbone.features == "pooled" else list(spatial.shape[1:])
    return {
        "dim": int(shape[0]),
        "feature_shape": shape,
        "spatial_size": list(spatial.shape[-2:]),
        "pooled_dim": int(pooled.shape[1]),
    }


class _Both(nn.Module):
    """The spatial map and the pooled vector of one trunk pass (for their shapes)."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        # not the head: it may also sit inside the trunk's model, and functional_call restores one
        # name per shared tensor only
        self.trunk, self.spatial, self.pool = backbone.trunk, backbone.spatial, backbone.pool

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.trunk(x)
        return self.spatial(out), self.pool(out)


def _meta_forward(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = {
        k: torch.empty_like(v, device="meta")
        for k, v in itertools.chain(module.named_parameters(), module.named_buffers())
    }
    with torch.no_grad():
        try:
            return torch.func.functional_call(module, tensors, (x,))
        except Exception:  # noqa: BLE001 - an op without a meta kernel: one real pass on zeros
            return module(torch.zeros(x.shape))
