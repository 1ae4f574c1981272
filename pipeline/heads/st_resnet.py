"""ST-ResNet head (Feichtenhofer, Pinz, Wildes, NIPS 2016; seed 003 sec. 3) on the feature sequence.

Each residual unit is ST-ResNet's temporal bottleneck (Table 1 / Fig. 2, conv5_2):
1x1x3 reduce -> 3x3x1 -> 1x1x3 expand, BN + ReLU after each filter, identity skip. On pooled
features the 3x3x1 spatial filter has a 1x1 map to work on, so it is a 1x1 (channel) filter here.
The temporal filters start as averaging residuals (eq. 5): the 1x1 weights w (He init, as a ResNet
would have them before pretraining) replicated over the T' taps and divided by T', so each starts as
"w applied to the temporal average of T' neighbours". After the units, temporal max-pooling in
windows of 5 (stride 2, ST-ResNet*) and a classifier whose scores are averaged over the pooled
positions (the paper's fully convolutional inference).

Two streams (`streams=("rgb", "flow")`: appearance first, motion second): every appearance unit gets
the motion residual of eq. 2, x_a' = relu(x_a + F(x_a + relu(x_m))), from the motion unit's input at
the same depth (the paper has one per resolution stage; this head has one stage, so every unit gets
it). Each stream keeps its own classifier (the paper trains a loss per stream: a joint softmax
overfits to appearance) and the head's output is the average of their non-softmaxed scores;
`Head.stream_logits` returns them separately for per-stream losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import HeadError
from pipeline.heads.base import register_head
from pipeline.heads.recipes import RECIPES


def inflate_temporal(weight: torch.Tensor, length: int) -> torch.Tensor:
    """ST-ResNet eq. 5: 1x1 weights (out, in[, 1...]) -> temporal filter (out, in, length) = w / length."""
    w = weight.reshape(weight.shape[0], weight.shape[1], 1)
    return w.repeat(1, 1, length) / length


class TemporalResidualUnit(nn.Module):
    """Bottleneck residual unit with 1x1x3 temporal filters on (B, C, T) sequences."""

    def __init__(self, channels: int, width: int, temporal_kernel: int = 3):
        super().__init__()
        pad = temporal_kernel // 2
        self.conv_a = nn.Conv1d(channels, width, temporal_kernel, padding=pad, bias=False)
        self.bn_a = nn.BatchNorm1d(width)
        self.conv_b = nn.Conv1d(width, width, 1, bias=False)
        self.bn_b = nn.BatchNorm1d(width)
        self.conv_c = nn.Conv1d(width, channels, temporal_kernel, padding=pad, bias=False)
        self.bn_c = nn.BatchNorm1d(channels)
        with torch.no_grad():
            for conv in (self.conv_a, self.conv_b, self.conv_c):
                spatial = torch.empty(conv.out_channels, conv.in_channels, 1)
                nn.init.kaiming_normal_(spatial, mode="fan_out", nonlinearity="relu")
                conv.weight.copy_(inflate_temporal(spatial, conv.kernel_size[0]))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = F.relu(self.bn_b(self.conv_b(y)))
        return self.bn_c(self.conv_c(y))

    def forward(self, x: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        inner = x if motion is None else x + F.relu(motion)
        return F.relu(x + self.residual(inner))


class STResNet(nn.Module):
    """Temporal residual units per stream, motion->appearance residuals, max-pool, averaged scores."""

    def __init__(
        self,
        *,
        streams: tuple[str, ...],
        dim: int,
        num_classes: int,
        num_units: int,
        width: int,
        temporal_kernel: int,
        pool_window: int,
        pool_stride: int,
    ):
        super().__init__()
        self.streams = streams
        self.pool_window = pool_window
        self.pool_stride = pool_stride
        self.units = nn.ModuleDict(
            {s: nn.ModuleList(TemporalResidualUnit(dim, width, temporal_kernel) for _ in range(num_units))
             for s in streams}
        )
        self.classifiers = nn.ModuleDict({s: nn.Linear(dim, num_classes) for s in streams})

    def _classify(self, x: torch.Tensor, stream: str) -> torch.Tensor:  # x: (B, C, T)
        pooled = F.max_pool1d(x, min(self.pool_window, x.shape[-1]), self.pool_stride)
        # Linear is affine, so averaging the scores of the pooled positions = scoring their mean.
        return self.classifiers[stream](pooled.mean(dim=-1))

    def stream_logits(self, z: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not isinstance(z, dict):
            z = {self.streams[0]: z}
        x = {s: z[s].transpose(1, 2) for s in self.streams}  # (B, T, C) -> (B, C, T)
        if len(self.streams) == 1:
            (s,) = self.streams
            for unit in self.units[s]:
                x[s] = unit(x[s])
        else:
            app, mot = self.streams
            for unit_a, unit_m in zip(self.units[app], self.units[mot]):
                x[app], x[mot] = unit_a(x[app], motion=x[mot]), unit_m(x[mot])
        return {s: self._classify(x[s], s) for s in self.streams}

    def forward(self, z: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(self.stream_logits(z).values())).mean(dim=0)


@register_head("st_resnet", recipe=RECIPES["st_resnet"], input_kind="pooled", max_streams=2,
               summary="temporal residual units (avg-initialised 1x1x3), max-pool; rgb+flow residuals (seed 003)")
def st_resnet(
    *,
    num_classes: int,
    dim: int,
    streams: tuple[str, ...],
    num_units: int = 2,
    width: int | None = None,
    temporal_kernel: int = 3,
    pool_window: int = 5,
    pool_stride: int = 2,
) -> nn.Module:
    if temporal_kernel < 1 or temporal_kernel % 2 == 0:
        raise HeadError(f"head 'st_resnet': temporal_kernel must be odd (same padding), got {temporal_kernel}")
    if num_units < 1 or pool_window < 1 or pool_stride < 1:
        raise HeadError("head 'st_resnet': num_units, pool_window and pool_stride must be positive")
    return STResNet(
        streams=streams, dim=dim, num_classes=num_classes, num_units=num_units,
        width=width or max(1, dim // 4), temporal_kernel=temporal_kernel,
        pool_window=pool_window, pool_stride=pool_stride,
    )
