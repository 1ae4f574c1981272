"""S3D-G head (Xie et al., Rethinking Spatiotemporal Feature Learning; seed 001) on spatial features.

Seed 001's finding is that temporal convolutions pay off on high-level features ("top-heavy"), which
is exactly where a head on cached backbone maps sits. Only the abstract survived extraction, so the
block follows the published S3D-G design: separable spatio-temporal convolution, a 1x3x3 spatial
Conv3D then a 3x1x1 temporal Conv3D (each BN + ReLU, no bias), then self-gating
y = x * sigmoid(W mean_{t,h,w}(x) + b) per channel. `num_blocks` such blocks, global space-time
average pooling, Linear. PyTorch default initialisation.

Default: 3 blocks whose temporal convs have stride 2 (8 segments -> 4 -> 2 -> 1), as S3D's top stages
halve time between them (by max-pooling there; a strided conv here, which costs less). One block
sees 3 frames and then averages over the clip: on the demo's time-reversed classes it stayed at
TSN's level (25% rgb top-1 vs TSN's 20%), 2 strided blocks reached 68% and 3 reached 86% (seed 0,
benchmarks/README.md "Order-aware heads").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import HeadError
from pipeline.heads.base import register_head
from pipeline.heads.recipes import RECIPES


class SelfGating(nn.Module):
    """S3D-G feature gating: channels scaled by a sigmoid of a linear map of space-time pooled x."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        gate = torch.sigmoid(self.fc(x.mean(dim=(-3, -2, -1))))
        return x * gate[:, :, None, None, None]


class SeparableGatedBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, temporal_stride: int = 1):
        super().__init__()
        pad = kernel_size // 2
        self.spatial = nn.Conv3d(channels, channels, (1, kernel_size, kernel_size), padding=(0, pad, pad), bias=False)
        self.bn_s = nn.BatchNorm3d(channels)
        self.temporal = nn.Conv3d(channels, channels, (kernel_size, 1, 1), stride=(temporal_stride, 1, 1),
                                  padding=(pad, 0, 0), bias=False)
        self.bn_t = nn.BatchNorm3d(channels)
        self.gate = SelfGating(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_s(self.spatial(x)))
        x = F.relu(self.bn_t(self.temporal(x)))
        return self.gate(x)


class S3DGHead(nn.Module):
    def __init__(self, *, dim: int, num_classes: int, num_blocks: int, kernel_size: int, temporal_stride: int = 1):
        super().__init__()
        self.blocks = nn.Sequential(*(SeparableGatedBlock(dim, kernel_size, temporal_stride) for _ in range(num_blocks)))
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
        return self.fc(self.blocks(x.transpose(1, 2)).mean(dim=(-3, -2, -1)))


@register_head("s3dg", recipe=RECIPES["s3dg"], input_kind="spatial",
               summary="3 top-heavy blocks: separable 1x3x3 + 3x1x1/2 convs, self-gating (S3D-G, seed 001)")
def s3dg(*, num_classes: int, dim: int, num_blocks: int = 3, kernel_size: int = 3, temporal_stride: int = 2) -> nn.Module:
    if num_blocks < 1 or kernel_size < 1 or kernel_size % 2 == 0 or temporal_stride < 1:
        raise HeadError(f"head 's3dg': num_blocks and temporal_stride must be >= 1 and kernel_size odd; "
                        f"got {num_blocks}, {temporal_stride}, {kernel_size}")
    return S3DGHead(dim=dim, num_classes=num_classes, num_blocks=num_blocks, kernel_size=kernel_size,
                    temporal_stride=temporal_stride)
