"""Input projections: dropout on the backbone features, then a Linear (pooled) or 1x1 conv (spatial).

Seed 000 (sec. 3.1, 3.5): features are projected to 256-d by a one-layer MLP after global pooling
(to the number of classes for TSN); for spatial heads a 1x1 2D convolution maps the channels to 256
and the map is kept. As in the TSN/TRN code bases seed 000 builds on, dropout (0.5) comes right
after the backbone features, before this layer, and the layer starts from N(0, 0.001) weights and
zero bias (their `new_fc` initialisation; we use it for the 1x1 conv too).

On spatial maps the dropout drops whole channels of a frame's map (Dropout2d, Tompson et al. 2015):
a map's neighbouring cells are strongly correlated, so zeroing single cells barely regularises, and
dropping a channel is what dropout on the pooled feature does to its map. It is also ~4x cheaper:
one draw per channel instead of per cell (element-wise dropout was ~40% of an fcn3d trial on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class PooledProjection(nn.Module):
    """(B, T, D) -> dropout -> Linear(D, out) -> (B, T, out)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        _tsn_init(self.linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


class SpatialProjection(nn.Module):
    """(B, T, C, H, W) -> channel dropout -> per-frame Conv2d(C, out, 1) -> (B, T, out, H, W).

    Fastest on CPU with channels-last frames (the in-memory batches are), which both layers keep."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        _tsn_init(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        y = self.conv(self.dropout(x.flatten(0, 1)))
        return y.unflatten(0, (b, t))


class StreamProjections(nn.ModuleDict):
    """One projection per stream for multi-stream heads: {stream: x} -> {stream: projected x}."""

    def forward(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {s: self[s](x[s]) for s in self}


def _tsn_init(layer: nn.Module) -> None:
    nn.init.normal_(layer.weight, 0.0, 0.001)
    nn.init.zeros_(layer.bias)


_KINDS = {"pooled": PooledProjection, "spatial": SpatialProjection}


def build_projection(input_kind: str, in_dims: Mapping[str, int], out_dim: int, dropout: float) -> nn.Module:
    """A single projection for one stream, a StreamProjections for several."""
    make = _KINDS[input_kind]
    if len(in_dims) == 1:
        (dim,) = in_dims.values()
        return make(dim, out_dim, dropout)
    return StreamProjections({s: make(d, out_dim, dropout) for s, d in in_dims.items()})
