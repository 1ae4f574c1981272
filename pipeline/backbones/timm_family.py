"""`timm:NAME[.TAG]`: any timm (1.0.x) image model, e.g. `timm:vit_base_patch16_clip_224.openai`,
`timm:vit_small_patch14_dinov2.lvd142m`, `timm:convnext_tiny` (the architecture's default tag).

- Preprocessing: the tag's pretrained config through timm's own `resolve_data_config` (input size,
  interpolation, crop_pct -> resize to floor(size / crop_pct) then centre crop, or `squash`
  -> resize to size x size, mean/std).
- Weights (`DEFAULT`): the tag's file in the Hugging Face hub cache (`model.safetensors`, else
  `pytorch_model.bin`), or torch hub's for the few URL-only tags; timm loads it (its checkpoint
  filters apply) via `pretrained_cfg_overlay=dict(file=...)`. `none` = random init.
- Features: pooled = `forward_head(x, pre_logits=True)` on `forward_features` (the model's own
  pooling: CLS or mean token for ViTs, with their fc_norm; global pool for CNNs); spatial =
  `forward_features` as a map (ViT patch tokens on their grid, prefix/register tokens dropped).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.transforms import InterpolationMode

from pipeline.backbones.backbone import Call, Parts, TokenMap
from pipeline.backbones.families import quiet, require, similar
from pipeline.backbones.hub import HubWeights
from pipeline.errors import BackboneError


def split(model: nn.Module) -> Parts:
    head = model.get_classifier() if getattr(model, "num_classes", 0) else None
    return Parts(
        trunk=Call(model, "forward_features"),
        pool=Call(model, "forward_head", owner=False, pre_logits=True),
        head=head if isinstance(head, nn.Module) and not isinstance(head, nn.Identity) else None,
        spatial=TokenMap(
            getattr(model, "num_prefix_tokens", 0), channels_last=getattr(model, "output_fmt", "NCHW") == "NHWC"
        ),
    )


def preset(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """timm's eval transform (`transforms_factory.transforms_imagenet_eval`) as an ImagePreprocess preset."""
    import timm.data

    data = timm.data.resolve_data_config(pretrained_cfg=cfg)
    _, height, width = data["input_size"]
    if height != width:
        raise BackboneError(f"{name}: non-square input {height}x{width} is not supported (crops are square)")
    scale = math.floor(height / data["crop_pct"])
    mode = data.get("crop_mode", "center")
    return {
        # squash: both sides to `scale` (aspect not kept); center and border: the shorter side
        "resize_size": [scale, scale] if mode == "squash" else [scale],
        "crop_size": int(height),
        "mean": [float(v) for v in data["mean"]],
        "std": [float(v) for v in data["std"]],
        "interpolation": InterpolationMode(data["interpolation"]),
        "antialias": True,  # timm resizes PIL images, which always filter
    }


def hub_files(cfg: Any) -> tuple[str, ...]:
    if cfg.hf_hub_id:
        if cfg.hf_hub_filename:
            return (f"hf:{cfg.hf_hub_id}/{cfg.hf_hub_filename}",)
        return (f"hf:{cfg.hf_hub_id}/model.safetensors", f"hf:{cfg.hf_hub_id}/pytorch_model.bin")
    if cfg.url:
        return (f"url:{cfg.url}",)
    return ()


def resolve(rest: str) -> tuple[Any, dict[str, Any]]:
    timm = require("timm", "timm", f"timm:{rest}")
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(rest)
    if not timm.is_model(arch):
        raise BackboneError(f"timm has no model {arch!r}{similar(arch, timm.list_models())}")
    try:
        cfg = get_pretrained_cfg(rest)
    except RuntimeError:
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        raise BackboneError(f"timm model {arch} has no tag {tag!r}; tags: {', '.join(tags) or 'none'}") from None
    full = f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else arch
    files = hub_files(cfg) if cfg is not None else ()
    cfg_dict = cfg.to_dict() if cfg is not None else {}

    def make_model(weights: Path | None = None, **kwargs: Any) -> nn.Module:
        with quiet():
            if weights is None:
                return timm.create_model(full, pretrained=False, **kwargs)
            return timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs)

    return split, {
        "kind": "image",
        "source": "timm",
        "make_model": make_model,
        "preset": lambda: preset(f"timm:{rest}", cfg_dict),
        "hub": HubWeights(label=full, files=files) if files else None,
        "library": f"timm {timm.__version__}",
        "preprocess_source": f"timm pretrained_cfg {full}",
        "summary": f"timm {full}",
    }
