"""`open_clip:MODEL/PRETRAINED`: an OpenCLIP (3.x) model's image tower, e.g. `open_clip:ViT-B-16/openai`.

- Preprocessing: the pretrained tag's config over the model's (OpenCLIP's `PreprocessCfg`): image
  size, interpolation (bicubic for CLIP), mean/std, and its eval transform (`shortest`: resize the
  shorter side to the size then centre crop, i.e. crop_pct 1; `squash`: resize to size x size).
- Weights (`DEFAULT`): the tag's file in the Hugging Face hub cache (safetensors first, as
  OpenCLIP does), or torch hub's checkpoint folder for URL-only tags; `open_clip.create_model`
  loads it. `open_clip:MODEL` without a tag has no weights: it needs `--weights none`.
- Features: pooled = the image tower's output (the CLIP image embedding, after its projection);
  spatial = the last block's patch tokens after the final norm, on their grid (class token
  dropped), both from one `forward_intermediates` pass. There is no classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torchvision.transforms import InterpolationMode

from pipeline.backbones.backbone import Call, Parts, Pick
from pipeline.backbones.families import quiet, require, similar
from pipeline.backbones.hub import HubWeights
from pipeline.errors import BackboneError


def split(visual: nn.Module) -> Parts:
    trunk = Call(visual, "forward_intermediates", indices=1, normalize_intermediates=True, output_fmt="NCHW")
    return Parts(trunk=trunk, pool=Pick("image_features"), head=None, spatial=Pick("image_intermediates", -1))


def preset(name: str, model_cfg: dict[str, Any], tag_cfg: dict[str, Any]) -> dict[str, Any]:
    from open_clip.transform import PreprocessCfg

    defaults = PreprocessCfg()
    size = model_cfg.get("vision_cfg", {}).get("image_size", defaults.size)
    size = size if isinstance(size, int) else size[0]
    mode = tag_cfg.get("resize_mode", defaults.resize_mode)
    if mode not in ("shortest", "squash"):
        raise BackboneError(f"{name}: OpenCLIP resize mode {mode!r} (pad to square) is not supported")
    return {
        "resize_size": [size, size] if mode == "squash" else [size],
        "crop_size": int(size),
        "mean": [float(v) for v in tag_cfg.get("mean", defaults.mean)],
        "std": [float(v) for v in tag_cfg.get("std", defaults.std)],
        "interpolation": InterpolationMode(tag_cfg.get("interpolation", defaults.interpolation)),
        "antialias": True,  # OpenCLIP resizes PIL images, which always filter
    }


def hub_files(tag_cfg: dict[str, Any]) -> tuple[str, ...]:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    files = []
    if tag_cfg.get("hf_hub"):
        repo, filename = tag_cfg["hf_hub"].rstrip("/"), HF_WEIGHTS_NAME
        if not tag_cfg["hf_hub"].endswith("/"):
            repo, _, filename = tag_cfg["hf_hub"].rpartition("/")
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else filename.rsplit(".", 1)[0] + ".safetensors"
        files += [f"hf:{repo}/{safe}", f"hf:{repo}/{filename}"]
    if tag_cfg.get("url"):
        files.append(f"url:{tag_cfg['url']}")
    return tuple(dict.fromkeys(files))


def resolve(rest: str) -> tuple[Any, dict[str, Any]]:
    open_clip = require("open_clip", "clip", f"open_clip:{rest}")
    model, _, tag = rest.partition("/")
    model_cfg = open_clip.get_model_config(model)
    if model_cfg is None:
        raise BackboneError(f"OpenCLIP has no model {model!r}{similar(model, open_clip.list_models())}")
    tag_cfg: dict[str, Any] = {}
    if tag:
        tag_cfg = open_clip.get_pretrained_cfg(model, tag)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model)
            raise BackboneError(f"OpenCLIP model {model} has no pretrained tag {tag!r}; tags: {', '.join(tags) or 'none'}")
    files = hub_files(tag_cfg)

    def make_model(weights: Path | None = None, **kwargs: Any) -> nn.Module:
        with quiet():
            clip = open_clip.create_model(model, pretrained=str(weights) if weights else None, **kwargs)
        return clip.visual  # the image tower; the text tower is dropped with `clip`

    return split, {
        "kind": "image",
        "source": "open_clip",
        "make_model": make_model,
        "preset": lambda: preset(f"open_clip:{rest}", model_cfg, tag_cfg),
        "hub": HubWeights(label=f"{model}/{tag}", files=files) if files else None,
        "library": f"open_clip {open_clip.__version__}",
        "preprocess_source": f"OpenCLIP pretrained cfg {model}/{tag}" if tag else f"OpenCLIP model cfg {model}",
        "summary": f"OpenCLIP {model} image tower" + (f", {tag} weights" if tag else ""),
    }
