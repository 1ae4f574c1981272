"""The head registry, the `Head` wrapper every head shares, `build_head` and `LateFusion`.

A registered head is a *body builder*: a keyword-only function that builds the temporal model on
projected features. `build_head` adds the input projection chosen by the head's `input_kind`, so
projection and body are separate submodules (`head.projection`, `head.body`) whose parameters and
multiply-adds are reported separately.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pipeline.errors import HeadError
from pipeline.heads.projection import build_projection
from pipeline.registry import Registry

HEADS: Registry = Registry("head")

INPUT_KINDS = ("pooled", "spatial")
# What build_head hands to a body builder when the builder's signature asks for it.
_COMMON = ("num_classes", "num_segments", "dim", "dropout", "streams")


def register_head(
    name: str,
    *,
    input_kind: str,
    summary: str,
    min_segments: int = 1,
    fixed_length: bool = False,
    max_streams: int = 1,
    projects_to: str = "dim",
    recipe: Any = None,
):
    """Register a body builder with the metadata `build_head`, the CLI and the trainer read.

    recipe: a pipeline.heads.recipes.Recipe, the training values train-head, ablate and the demo use
    for what the user leaves out (None: recipes.DEFAULT_RECIPE; recipes imports this module, not back).

    fixed_length: the body's weights depend on T, so inputs must have exactly `num_segments` steps.
    projects_to: "dim" (Linear / 1x1 conv to `proj_dim`) or "classes" (TSN: straight to scores).
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    return HEADS.register(
        name,
        input_kind=input_kind,
        summary=summary,
        min_segments=min_segments,
        fixed_length=fixed_length,
        max_streams=max_streams,
        projects_to=projects_to,
        recipe=recipe,
    )


class Head(nn.Module):
    """Projection + temporal body. forward: features -> (B, num_classes) logits (not softmaxed).

    Accepts pooled (B, T, D) or spatial (B, T, C, H, W) floating tensors (any float dtype; they are
    cast to the head's dtype), or a dict {stream: tensor} for multi-stream heads.
    """

    def __init__(
        self,
        *,
        name: str,
        projection: nn.Module,
        body: nn.Module,
        input_kind: str,
        num_classes: int,
        num_segments: int,
        in_dim: dict[str, int],
        spatial: tuple[int, int] | None,
        min_segments: int,
        fixed_length: bool,
        streams: tuple[str, ...],
        spec: dict[str, Any],
    ):
        super().__init__()
        self.name = name
        self.projection = projection
        self.body = body
        self.input_kind = input_kind
        self.num_classes = num_classes
        self.num_segments = num_segments
        self.in_dim = in_dim
        self.spatial = spatial
        self.min_segments = min_segments
        self.fixed_length = fixed_length
        self.streams = streams
        self.spec = spec  # build_head(**spec) rebuilds this head (saved with runs)

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.body(self.projection(self.prepare(x)))

    def stream_logits(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each stream's own logits (forward averages them), for per-stream losses as in ST-ResNet."""
        z = self.projection(self.prepare(x))
        if hasattr(self.body, "stream_logits"):
            return self.body.stream_logits(z)
        return {self.streams[0]: self.body(z)}

    def prepare(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """Validate shapes, pool spatial maps for pooled heads, cast; dict in/out for multi-stream."""
        if len(self.streams) > 1:
            if not isinstance(x, Mapping) or set(x) != set(self.streams):
                got = sorted(x) if isinstance(x, Mapping) else f"a {type(x).__name__}"
                raise HeadError(f"head {self.name!r} expects a dict with streams {list(self.streams)}; got {got}")
            out = {s: self._prepare_one(x[s], s) for s in self.streams}
            shapes = {s: tuple(v.shape[:2]) for s, v in out.items()}
            if len(set(shapes.values())) > 1:
                raise HeadError(f"head {self.name!r}: streams disagree on (batch, segments): {shapes}")
            return out
        stream = self.streams[0]
        if isinstance(x, Mapping):
            if set(x) != {stream}:
                raise HeadError(f"head {self.name!r} is single-stream ({stream!r}); got streams {sorted(x)}")
            x = x[stream]
        return self._prepare_one(x, stream)

    def _prepare_one(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise HeadError(f"head {self.name!r}: {stream} features must be a float tensor, got {_describe(x)}")
        if x.dim() == 3 and self.input_kind == "spatial":
            raise HeadError(
                f"head {self.name!r} needs spatial features (B, T, C, H, W) but got pooled {tuple(x.shape)}; "
                "cache spatial maps (no global pooling) or choose a pooled head"
            )
        if x.dim() == 5 and self.input_kind == "pooled":
            x = x.mean(dim=(-2, -1))  # a pooled head given spatial maps pools them
        if x.dim() not in (3, 5):
            raise HeadError(
                f"head {self.name!r}: {stream} features must be (B, T, D) or (B, T, C, H, W), got {tuple(x.shape)}"
            )
        if x.shape[2] != self.in_dim[stream]:
            raise HeadError(
                f"head {self.name!r} was built for {self.in_dim[stream]}-d {stream} features, got "
                f"{x.shape[2]} channels in {tuple(x.shape)}"
            )
        steps = x.shape[1]
        if self.fixed_length and steps != self.num_segments:
            raise HeadError(
                f"head {self.name!r} was built for {self.num_segments} segments and its weights depend on it; "
                f"got {steps} in {tuple(x.shape)}"
            )
        if steps < self.min_segments:
            raise HeadError(f"head {self.name!r} needs at least {self.min_segments} segments, got {steps}")
        dtype = next(self.parameters(), x).dtype
        return x.to(dtype)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_kind={self.input_kind!r}, streams={self.streams}"


# Options whose defaults changed, with the values earlier runs were built with: a saved spec that
# lacks them predates the change (specs record every option since), so it rebuilds as trained.
EARLIER_DEFAULTS = {
    "s3dg": {"num_blocks": 1, "temporal_stride": 1},  # now 3 strided blocks
    "mtconv": {"num_blocks": 1},  # now 4 blocks
}


def head_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every keyword option of head `name`'s builder: its default, or the value in `given`."""
    params = inspect.signature(HEADS.get(name)).parameters
    defaults = {k: p.default for k, p in params.items()
                if k not in _COMMON and p.default is not inspect.Parameter.empty}
    return {**defaults, **given}


def saved_spec_options(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Options of a saved spec, with EARLIER_DEFAULTS filled in where it predates a default change."""
    return {**EARLIER_DEFAULTS.get(name, {}), **spec}


def build_head(
    name: str,
    *,
    num_classes: int,
    num_segments: int,
    in_dim: int | Mapping[str, int],
    spatial: Sequence[int] | None = None,
    dropout: float = 0.5,
    proj_dim: int = 256,
    streams: Sequence[str] = ("rgb",),
    temporal_center: float = 0.0,
    **options: Any,
) -> Head:
    """Build a registered head with its input projection (see the package docstring).

    temporal_center: fraction of the projected channels centred on each clip's temporal mean
    (pooled heads that project to `proj_dim`; see pipeline.heads.projection).
    """
    builder = HEADS.get(name)
    meta = HEADS.meta(name)
    streams = tuple(streams)
    if not streams or len(set(streams)) != len(streams) or not all(isinstance(s, str) and s for s in streams):
        raise HeadError(f"head {name!r}: streams must be distinct non-empty names, got {streams}")
    if len(streams) > meta["max_streams"]:
        raise HeadError(
            f"head {name!r} is single-stream; got streams {list(streams)} "
            "(fuse two heads with pipeline.heads.LateFusion instead)"
        )
    _check_positive(name, num_classes=num_classes, num_segments=num_segments, proj_dim=proj_dim)
    if num_segments < meta["min_segments"]:
        raise HeadError(f"head {name!r} needs at least {meta['min_segments']} segments, got {num_segments}")
    if not 0.0 <= dropout < 1.0:
        raise HeadError(f"head {name!r}: dropout must be in [0, 1), got {dropout}")
    _check_center(name, temporal_center, meta)
    dims = _stream_dims(name, in_dim, streams)
    if spatial is not None:
        spatial = tuple(int(v) for v in spatial)
        if len(spatial) != 2 or min(spatial) < 1:
            raise HeadError(f"head {name!r}: spatial must be (H, W) with positive sizes, got {spatial}")

    params = inspect.signature(builder).parameters
    unknown = sorted(k for k in options if k not in params or k in _COMMON)
    if unknown:
        choices = ", ".join(p for p in params if p not in _COMMON) or "none"
        raise HeadError(f"head {name!r} has no option {unknown[0]!r}; its options: {choices}")
    dim = num_classes if meta["projects_to"] == "classes" else proj_dim
    common = dict(num_classes=num_classes, num_segments=num_segments, dim=dim, dropout=dropout, streams=streams)
    body = builder(**{k: v for k, v in common.items() if k in params}, **options)
    projection = build_projection(meta["input_kind"], dims, dim, dropout, center=temporal_center)

    spec = dict(
        name=name, num_classes=num_classes, num_segments=num_segments,
        in_dim=dims[streams[0]] if len(streams) == 1 else dict(dims), spatial=spatial,
        dropout=dropout, proj_dim=proj_dim, streams=list(streams), **options,
    )
    if temporal_center:  # absent = 0 (specs saved before the option build the same head)
        spec["temporal_center"] = temporal_center
    return Head(
        name=name, projection=projection, body=body, input_kind=meta["input_kind"],
        num_classes=num_classes, num_segments=num_segments, in_dim=dims, spatial=spatial,
        min_segments=meta["min_segments"], fixed_length=meta["fixed_length"], streams=streams, spec=spec,
    )


class LateFusion(nn.ModuleDict):
    """Weighted average of the logits of one head per stream, e.g. {"rgb": head_a, "flow": head_b}.

    Two-stream papers fuse non-softmaxed scores by a weighted average (TSN: rgb 1, flow 1.5); forward
    takes {stream: features}. `weights` ({stream: weight}, equal when not given) are normalised to sum 1;
    a train-head run chooses them on its training videos (pipeline.training.fusion).
    """

    def __init__(self, heads: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None):
        if not heads:
            raise HeadError("LateFusion needs at least one head")
        super().__init__(dict(heads))
        self.streams = tuple(heads)
        self.set_weights(weights or dict.fromkeys(self.streams, 1.0))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        total = sum(float(weights.get(s, 0.0)) for s in self.streams)
        if set(weights) != set(self.streams) or min(weights.values()) < 0 or total <= 0:
            raise HeadError(f"LateFusion weights must be >= 0 for streams {list(self.streams)} with a positive "
                            f"sum; got {dict(weights)}")
        self.weights = {s: float(weights[s]) / total for s in self.streams}

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.fuse(self.stream_logits(x))

    def fuse(self, logits: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted average of per-stream logits (as `stream_logits` gives them)."""
        return sum(self.weights[s] * logits[s] for s in self.streams)

    def stream_logits(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not isinstance(x, Mapping) or set(x) != set(self.streams):
            got = sorted(x) if isinstance(x, Mapping) else f"a {type(x).__name__}"
            raise HeadError(f"LateFusion expects a dict with streams {list(self.streams)}; got {got}")
        return {s: self[s](x[s]) for s in self.streams}


def _check_positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HeadError(f"head {name!r}: {key} must be a positive integer, got {value!r}")


def _check_center(name: str, center: float, meta: Mapping[str, Any]) -> None:
    if isinstance(center, bool) or not isinstance(center, (int, float)) or not 0.0 <= center <= 1.0:
        raise HeadError(f"head {name!r}: temporal_center must be a fraction in [0, 1], got {center!r}")
    if center and meta["input_kind"] != "pooled":
        raise HeadError(f"head {name!r}: temporal_center applies to pooled heads only (this head reads spatial maps)")
    if center and meta["projects_to"] == "classes":
        raise HeadError(f"head {name!r} averages class scores over time; temporal_center would cancel them")


def _stream_dims(name: str, in_dim: int | Mapping[str, int], streams: tuple[str, ...]) -> dict[str, int]:
    if isinstance(in_dim, Mapping):
        if set(in_dim) != set(streams):
            raise HeadError(f"head {name!r}: in_dim has streams {sorted(in_dim)} but streams are {list(streams)}")
        dims = {s: in_dim[s] for s in streams}
    else:
        dims = {s: in_dim for s in streams}
    for s, d in dims.items():
        _check_positive(name, **{f"in_dim[{s}]": d})
    return dims


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor {tuple(x.shape)}"
    return type(x).__name__
