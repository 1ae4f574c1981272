"""Input projections: dropout on the backbone features, then a Linear (pooled) or 1x1 conv (spatial).

Köpüklü et al. (sec. 3.1, 3.5): features are projected to 256-d by a one-layer MLP after global pooling
(to the number of classes for TSN); for spatial heads a 1x1 2D convolution maps the channels to 256
and the map is kept. As in the TSN/TRN code bases the paper builds on, dropout (0.5) comes right
after the backbone features, before this layer, and the layer starts from N(0, 0.001) weights and
zero bias (their `new_fc` initialisation; we use it for the 1x1 conv too).

On spatial maps the dropout drops whole channels of a frame's map (Dropout2d, Tompson et al. 2015):
a map's neighbouring cells are strongly correlated, so zeroing single cells barely regularises, and
dropping a channel is what dropout on the pooled feature does to its map. It is also ~4x cheaper:
one draw per channel instead of per cell (element-wise dropout was ~40% of an fcn3d trial on CPU).

Temporal centring (`center`, pooled heads; not in the paper): a fraction of the projected channels
has each clip's mean over time subtracted, so those channels carry only how the clip changes and
the rest keep its static content. Why: in cached features the static per-clip part (what is in
the scene) dwarfs the change over time; it is order-blind, and a small training set lets a head
memorise clips by it. Heads that read one step (the RNNs' last output) or pool local temporal
filters (FCN-2D, ST-ResNet) then see the clip's end but not where it started; a centred channel
at the last step says where the clip ended relative to its whole course. No parameters; the
Linear decides what goes to the centred and what to the plain channels (benchmarks/README.md,
"Per-head training recipes": rgb +10-30 points for those heads on the demo, flow unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class PooledProjection(nn.Module):
    """(B, T, D) -> dropout -> Linear(D, out) -> (B, T, out); the first round(center * out) output
    channels then have the clip's temporal mean subtracted (see the module docstring)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, center: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        _tsn_init(self.linear)
        self.centered = round(center * out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(self.dropout(x))
        if not self.centered:
            return y
        moving, static = y[..., :self.centered], y[..., self.centered:]
        return torch.cat([moving - moving.mean(dim=1, keepdim=True), static], dim=-1)

    def extra_repr(self) -> str:
        return f"centered={self.centered}" if self.centered else ""


class SpatialProjection(nn.Module):
    """(B, T, C, H, W) -> channel dropout -> per-frame Conv2d(C, out, 1) -> (B, T, out, H, W).

    Fastest on CPU with channels-last frames (the in-memory batches are), which both layers keep.
    Cached features (no gradient) are dropped in place: the batch is a fresh float32 copy made for
    this step, and a new 1280x7x7-map tensor per step cost ~4x the masking itself on CPU."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        _tsn_init(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        frames = x.flatten(0, 1)
        dropped = F.dropout2d(frames, self.dropout.p, self.training, inplace=not frames.requires_grad)
        y = self.conv(dropped)
        return y.unflatten(0, (b, t))


class StreamProjections(nn.ModuleDict):
    """One projection per stream for multi-stream heads: {stream: x} -> {stream: projected x}."""

    def forward(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {s: self[s](x[s]) for s in self}


def _tsn_init(layer: nn.Module) -> None:
    nn.init.normal_(layer.weight, 0.0, 0.001)
    nn.init.zeros_(layer.bias)


_KINDS = {"pooled": PooledProjection, "spatial": SpatialProjection}


def build_projection(input_kind: str, in_dims: Mapping[str, int], out_dim: int, dropout: float,
                     center: float = 0.0) -> nn.Module:
    """A single projection for one stream, a StreamProjections for several. `center`: pooled only."""
    kind = _KINDS[input_kind]

    def make(dim: int, out: int, rate: float) -> nn.Module:
        return kind(dim, out, rate, center) if center else kind(dim, out, rate)

    if len(in_dims) == 1:
        (dim,) = in_dims.values()
        return make(dim, out_dim, dropout)
    return StreamProjections({s: make(d, out_dim, dropout) for s, d in in_dims.items()})
