"""The `Backbone` module: a torchvision (or tiny) network split into trunk, pool and head.

    frames --preprocess--> x --trunk--> spatial map (N, C, h, w) --pool--> pooled (N, D) --head--> logits

Transformers (timm/OpenCLIP ViTs) have a trunk that returns tokens, not a map: their `spatial`
part turns the trunk's output into the map (patch tokens reshaped, prefix/register tokens dropped)
and `pool` takes the trunk's output to the model's own pooled vector (CLS or mean token).

`forward_features` returns the spatial map or the pooled vector (the timm-style split); stage one
caches it, stage two trains heads on it, and `forward_head` puts the original classifier back on
top (so a stored feature can be checked against the full torchvision model). Video backbones run on
clips `(N, C, T, H, W)`; their trunk averages the remaining time axis so that one clip gives one
feature of the same shape as an image backbone's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.errors import BackboneError


@dataclass
class Parts:
    """What a registered backbone function returns for a built model.

    trunk: input -> spatial map `(N, C, h, w)`, the final pooling removed (or, with `spatial`, any
        output both `pool` and `spatial` read: a transformer's tokens).
    pool: trunk output -> pooled vector `(N, D)`, the architecture's own pre-logits pooling.
    head: pooled vector -> logits, or None when the classifier works on the map (see spatial_head).
    spatial_head: spatial map -> logits, only for classifiers that are not `head(pool(x))`
        (SqueezeNet's 1x1 convolution before its pooling).
    """

    trunk: nn.Module
    pool: nn.Module
    head: nn.Module | None
    spatial_head: nn.Module | None = None
    spatial: nn.Module | None = None  # trunk output -> (N, C, h, w); None: the trunk gives the map


class GlobalAvgPool(nn.Module):
    """Mean over all dimensions after the channel one: (N, C, ...) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)


class TemporalMean(nn.Module):
    """(N, C, T, h, w) -> (N, C, h, w): one feature map per clip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(2)


class Call(nn.Module):
    """`model.<method>(x, **kwargs)` as a module (timm's `forward_features` / `forward_head`).

    `owner=False` keeps the model out of this module's children: a second view of a model that
    another part owns (its parameters would otherwise be listed and saved twice).
    """

    def __init__(self, model: nn.Module, method: str, *, owner: bool = True, **kwargs: Any):
        super().__init__()
        if owner:
            self.model = model
        else:
            self._borrowed = (model,)  # a tuple: not registered as a submodule
        self.method, self.kwargs = method, kwargs

    def forward(self, x: Any) -> Any:
        model = self.model if "model" in self._modules else self._borrowed[0]
        return getattr(model, self.method)(x, **self.kwargs)


class Pick(nn.Module):
    """One item of a trunk's dict/tuple output (`out[key][index]`)."""

    def __init__(self, key: Any, index: int | None = None):
        super().__init__()
        self.key, self.index = key, index

    def forward(self, out: Any) -> torch.Tensor:
        value = out[self.key]
        return value if self.index is None else value[self.index]


class TokenMap(nn.Module):
    """A transformer's output -> a spatial map (N, C, h, w).

    Tokens (N, L, C): the first `prefix` (class, distillation, register tokens) are dropped and the
    rest laid out on the square patch grid (inputs are square centre crops). (N, h, w, C) maps
    (timm's NHWC models: Swin, ...) are permuted; (N, C, h, w) passes through.
    """

    def __init__(self, prefix: int = 0, *, channels_last: bool = False):
        super().__init__()
        self.prefix, self.channels_last = int(prefix), channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return x.permute(0, 3, 1, 2) if self.channels_last else x
        if x.ndim != 3:
            raise BackboneError(f"cannot make a spatial map of a {tuple(x.shape)} output")
        tokens = x[:, self.prefix :]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise BackboneError(f"{tokens.shape[1]} patch tokens do not make a square grid")
        return tokens.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


class ChannelAffine(nn.Module):
    """Per-channel `x * scale + shift` of an RGB input (GoogLeNet's `transform_input`).

    Marked `rgb_only`: the flow stream replaces it with Identity, it means nothing for flow.
    """

    rgb_only = True

    def __init__(self, scale: list[float], shift: list[float]):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(shift).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class Backbone(nn.Module):
    """A feature extractor in eval mode with gradients off (call `requires_grad_()` to fine-tune).

    Attributes:
        meta: plain dict for the store's provenance (name, weights, features, dim, shapes,
            preprocessing); see `build_backbone`.
        preprocessor: turns decoded frames (or flow fields) into the network's input.
    """

    def __init__(
        self,
        parts: Parts,
        *,
        features: str,
        kind: str,
        channels_last: bool = False,
        amp_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.trunk, self.pool, self.head = parts.trunk, parts.pool, parts.head
        self.spatial_head = parts.spatial_head
        self.spatial = parts.spatial if parts.spatial is not None else nn.Identity()
        self.token_trunk = parts.spatial is not None  # the pool reads tokens, not the map
        self.features, self.kind = features, kind
        self.channels_last = channels_last and kind == "image"
        self.amp_dtype = amp_dtype
        self.meta: dict[str, Any] = {}
        self.preprocessor: Any = None
        self.frozen = True
        self.eval()
        super().requires_grad_(False)

    # -- gradients --------------------------------------------------------------------------------

    def requires_grad_(self, requires_grad: bool = True) -> Backbone:
        super().requires_grad_(requires_grad)
        self.frozen = not requires_grad
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _context(self, device: torch.device) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if self.frozen:  # no autograd bookkeeping at all when nothing can learn
            stack.enter_context(torch.inference_mode())
        if self.amp_dtype is not None:
            stack.enter_context(torch.autocast(device.type, dtype=self.amp_dtype))
        return stack

    # -- forward ----------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input -> pooled `(N, D)` or spatial `(N, C, h, w)` float32 features."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._context(x.device):
            out = self.from_trunk(self.trunk(x))
        return out.float()

    def from_trunk(self, out: Any) -> torch.Tensor:
        """The trunk's output -> this backbone's features (pooled vector or spatial map)."""
        return self.pool(out) if self.features == "pooled" else self.spatial(out)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Features of this backbone's kind -> the original classifier's logits."""
        with self._context(features.device):
            if features.ndim == 4 and self.spatial_head is not None:
                return self.spatial_head(features).float()
            if self.head is None:
                name = self.meta.get("name", "this backbone")
                raise BackboneError(f"{name}'s classifier needs spatial features, got pooled ones")
            if features.ndim == 4:
                if self.token_trunk:
                    name = self.meta.get("name", "this backbone")
                    raise BackboneError(f"{name} pools its tokens, not a spatial map: give pooled features")
                features = self.pool(features)
            return self.head(features).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- preprocessing (delegated, see preprocess.py) ---------------------------------------------

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """Decoded frames -> normalised, centre-cropped input `(N, C, crop, crop)`."""
        return self.preprocessor(frames)

    def preprocess_views(self, frames: torch.Tensor, *, views: str = "center") -> torch.Tensor:
        """Decoded frames -> normalised views `(V, N, C, crop, crop)`, view 0 = centre crop."""
        return self.preprocessor.views(frames, views=views)

    # -- video clips --------------------------------------------------------------------------------

    def clip_index(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sliding windows over a video: frame indices `(W, window)` and centre frames `(W,)`."""
        from pipeline.backbones.clips import clip_index

        if self.kind != "video":
            raise BackboneError(f"{self.meta.get('name')} is an image backbone; it has no clips")
        return clip_index(num_frames, window=self.meta["clip_window"], stride=self.meta["clip_stride"])

    def make_clips(self, frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Preprocessed frames `(T, C, H, W)` + `clip_index` -> clips `(W, C, window, H, W)`."""
        return frames[index].permute(0, 2, 1, 3, 4)
