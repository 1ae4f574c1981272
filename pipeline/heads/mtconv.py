"""MTConv head (Stergiou & Poppe, Multi-Temporal Convolutions; seed 002 sec. III) on spatial features.

`num_blocks` MTBlocks (default 4) on the projected (B, C, T, H, W) volume, time halved by temporal
max-pooling (window 2) between consecutive blocks (8 segments: 8 -> 4 -> 2 -> 1), then global average
pooling and a Linear. MTNet stacks MTBlocks in place of X3D's residual blocks; the pooling between
them is ours (as in ST-ResNet and S3D): one block sees a few frames and then averages over the clip,
and on the demo's time-reversed classes it stayed at TSN's level (rgb top-1 25% vs TSN's 20%);
2 / 3 / 4 pooled blocks reached 28 / 38 / 48-55% (benchmarks/README.md, "Order-aware heads"). Each block:
- local branch: Conv3D 3x3x3 to C_L = floor(r*C) channels, BN, ReLU (eq. 1-2);
- prolonged branch (eq. 3-4): the local output and the block input are each reduced 2x in space by
  SoftPool (eq. 5) and 2x in time by temporal triplet-cosine frame selection (eq. 6-7), convolved
  (3x3x3 Conv3D + BN each, to C_P = C - C_L channels), added, ReLU, and trilinearly upsampled
  back to (T, H, W);
- global branch (eq. 8-11, Squeeze and Recursion): a 2-layer GRU over the spatially averaged block
  input; its per-frame outputs (C channels) multiply the concatenated [local, prolonged] volume;
- as in an MTBlock, the result is added to the block input (identity skip) and rectified.

Choices where the text was lost or is silent (the equations did not survive extraction):
- frames are selected with the LOWEST triplet similarity, as the paper says; the authors' released
  code takes the highest squared similarities instead. Each volume selects its own frames (eq. 4
  applies the selection to each input), boundary frames have no triplet and are never selected
  (as in the released code), and selection is skipped for T < 3 (nothing to choose from);
- odd map sizes are replicate-padded by one row/column before SoftPool (released code does the same);
- the GRU excitation is used as is (tanh range, no extra sigmoid), as in the released
  Squeeze-and-Recursion code; PyTorch default init, convs without bias (BN follows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import HeadError
from pipeline.heads.base import register_head
from pipeline.heads.recipes import RECIPES


def soft_pool2d(x: torch.Tensor) -> torch.Tensor:
    """SoftPool with a 2x2 kernel, stride 2, over the last two dims: sum(softmax(a) * a) per window.

    Odd sizes are replicate-padded at the bottom/right first, so the output is ceil(H/2) x ceil(W/2).
    Computed as avgpool(e * a) / avgpool(e) with e = exp(a - window max): the same values as a softmax
    over each window's 4 cells, at ~0.6x its CPU time (a softmax over a last dim of 4 was ~20% of an
    mtconv trial).
    """
    lead, (height, width) = x.shape[:-2], x.shape[-2:]
    x = x.reshape(-1, height, width)
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
        height, width = x.shape[-2:]
    peak = F.max_pool2d(x.detach(), 2)[:, :, None, :, None]  # a shift per window: softmax ignores it
    weight = torch.exp(x.reshape(-1, height // 2, 2, width // 2, 2) - peak).reshape_as(x)
    pooled = F.avg_pool2d(weight * x, 2) / F.avg_pool2d(weight, 2)
    return pooled.reshape(*lead, *pooled.shape[-2:])


def triplet_cosine_scores(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T-2): for each inner frame t, cos(f_{t-1}, f_t) + cos(f_t, f_{t+1}),
    with f the spatially summed activations (eq. 6-7)."""
    frames = x.sum(dim=(-2, -1)).transpose(1, 2)  # (B, T, C)
    pair = F.cosine_similarity(frames[:, :-1], frames[:, 1:], dim=-1, eps=1e-8)  # (B, T-1)
    return pair[:, :-1] + pair[:, 1:]


def triplet_cosine_select(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the floor(T/2) inner frames with the lowest triplet similarity, in temporal order.

    Returns (selected (B, C, floor(T/2), H, W), frame indices (B, floor(T/2))). Ties go to the
    earlier frame. Needs T >= 3.
    """
    steps = x.shape[2]
    if steps < 3:
        raise HeadError(f"triplet cosine selection needs at least 3 frames, got {steps}")
    scores = triplet_cosine_scores(x)
    order = torch.sort(scores, dim=1, stable=True).indices[:, : steps // 2]
    index = torch.sort(order, dim=1).values + 1  # inner frame t sits at position t-1 of the scores
    gather = index[:, None, :, None, None].expand(-1, x.shape[1], -1, *x.shape[-2:])
    return torch.gather(x, 2, gather), index


def _reduce(x: torch.Tensor) -> torch.Tensor:
    """Prolonged-branch reduction: SoftPool 2x in space, triplet selection 2x in time (T >= 3)."""
    x = soft_pool2d(x)
    return triplet_cosine_select(x)[0] if x.shape[2] >= 3 else x


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout))


class MTBlock(nn.Module):
    def __init__(self, channels: int, ratio: float, gru_layers: int = 2):
        super().__init__()
        self.local_channels = math.floor(ratio * channels)
        prolonged = channels - self.local_channels
        self.local = nn.Sequential(_conv_bn(channels, self.local_channels), nn.ReLU(inplace=True))
        self.prolonged_from_local = _conv_bn(self.local_channels, prolonged)
        self.prolonged_from_input = _conv_bn(channels, prolonged)
        self.recursion = nn.GRU(channels, channels, num_layers=gru_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        local = self.local(x)
        prolonged = F.relu(
            self.prolonged_from_local(_reduce(local)) + self.prolonged_from_input(_reduce(x))
        )
        prolonged = F.interpolate(prolonged, size=x.shape[2:], mode="trilinear", align_corners=False)
        excitation, _ = self.recursion(x.mean(dim=(-2, -1)).transpose(1, 2))  # (B, T, C)
        y = torch.cat([local, prolonged], dim=1) * excitation.transpose(1, 2)[..., None, None]
        return F.relu(y + x)


class MTConvHead(nn.Module):
    """`num_blocks` MTBlocks, time halved by max-pooling (window 2) between consecutive ones."""

    def __init__(self, *, dim: int, num_classes: int, ratio: float, gru_layers: int, num_blocks: int = 1):
        super().__init__()
        self.block = MTBlock(dim, ratio, gru_layers)  # the first keeps its name: one-block checkpoints load
        self.more_blocks = nn.ModuleList(MTBlock(dim, ratio, gru_layers) for _ in range(num_blocks - 1))
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
        x = self.block(x.transpose(1, 2))
        for block in self.more_blocks:
            x = block(F.max_pool3d(x, (2, 1, 1), ceil_mode=True) if x.shape[2] >= 2 else x)
        return self.fc(x.mean(dim=(-3, -2, -1)))


@register_head("mtconv", recipe=RECIPES["mtconv"], input_kind="spatial",
               summary="4 MTBlocks (local + prolonged branches, GRU excitation), time pooled 2x between (seed 002)")
def mtconv(*, num_classes: int, dim: int, ratio: float = 0.875, gru_layers: int = 2, num_blocks: int = 4) -> nn.Module:
    if num_blocks < 1:
        raise HeadError(f"head 'mtconv': num_blocks must be >= 1, got {num_blocks}")
    if not 0.0 < ratio < 1.0 or not 1 <= math.floor(ratio * dim) < dim:
        raise HeadError(
            f"head 'mtconv': channel ratio r={ratio} must leave both branches channels "
            f"(floor(r*{dim}) in [1, {dim - 1}])"
        )
    return MTConvHead(dim=dim, num_classes=num_classes, ratio=ratio, gru_layers=gru_layers, num_blocks=num_blocks)
