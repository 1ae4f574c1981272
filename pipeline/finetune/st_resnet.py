"""ST-ResNet (seed 003) on two ResNet backbones: motion residuals and temporal 1x1xT' filters.

Table 1 / Fig. 2 of the paper, for every selected stage conv2_x..conv5_x (torchvision's layer1..4):
- the stage's second residual unit of the appearance stream receives the motion stream's input of
  the same depth, eq. 2: x_a' = f(x_a + F(x_a + f(x_m), W_a)) (motion -> appearance only);
- in both streams that unit's 1x1 dimensionality-mapping convolutions (Bottleneck conv1 and conv3)
  become 1x1xT' temporal filters over the clip's segments, initialised by eq. 5 as the 2D weights
  replicated over T' taps and divided by T'. The paper's network (ResNet-50, four stages) has 4
  such connections and 16 such filters.

Time is the segment axis: a backbone sees (B*N, C, H, W) frames, a temporal filter regroups them
as (B, C, N, H, W). The ends are padded by repeating the first and last segment (the paper pads
short inputs symmetrically in time), so on a clip whose segments are all the same frame every
temporal filter equals its 2D original exactly, and the converted network equals the 2D one.
BasicBlock units (ResNet-18/34) have no 1x1 convolutions; they get the motion residuals only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from pipeline.errors import BackboneError
from pipeline.heads.st_resnet import inflate_temporal

FIRST_STAGE = 2  # conv2_x is torchvision's layer1


class TemporalConv(nn.Module):
    """A 1x1 convolution made temporal (1x1xT'): (B*N, C, H, W) frames of B clips of N segments."""

    def __init__(self, conv: nn.Conv2d, length: int):
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise BackboneError(f"only 1x1, stride-1, ungrouped convolutions become temporal filters, got {conv}")
        self.length = length
        self.num_segments = 1  # set by the model for each batch (see `set_segments`)
        weight = inflate_temporal(conv.weight.detach(), length)  # (out, in, T') = w / T'  (eq. 5)
        self.weight = nn.Parameter(weight[..., None, None].contiguous())  # (out, in, T', 1, 1)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.num_segments
        frames, channels, height, width = x.shape
        clips = x.reshape(frames // n, n, channels, height, width).transpose(1, 2)  # (B, C, N, H, W)
        pad = self.length // 2
        if pad:
            clips = torch.cat([clips[:, :, :1].expand(-1, -1, pad, -1, -1), clips,
                               clips[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)
        out = F.conv3d(clips, self.weight.to(clips.dtype), None if self.bias is None else self.bias.to(clips.dtype))
        return out.transpose(1, 2).reshape(frames, -1, height, width)

    def collapsed(self) -> nn.Conv2d:
        """The 2D convolution this filter computes on a static clip: its taps summed (inverse of eq. 5)."""
        out_channels, in_channels = self.weight.shape[:2]
        conv = nn.Conv2d(in_channels, out_channels, 1, bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(self.weight.sum(dim=2))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.to(self.weight.device)


class MotionResidualUnit(nn.Module):
    """A residual unit of the appearance stream taking the motion stream's input (eq. 2)."""

    def __init__(self, unit: Bottleneck | BasicBlock):
        super().__init__()
        self.unit = unit

    def forward(self, x: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        u = self.unit
        inner = x if motion is None else x + F.relu(motion)
        out = u.relu(u.bn1(u.conv1(inner)))
        if isinstance(u, Bottleneck):
            out = u.relu(u.bn2(u.conv2(out)))
            out = u.bn3(u.conv3(out))
        else:
            out = u.bn2(u.conv2(out))
        identity = x if u.downsample is None else u.downsample(x)
        return u.relu(out + identity)


def resnet_stages(trunk: nn.Module) -> dict[int, nn.Sequential]:
    """{2: layer1, ..., 5: layer4}: the trunk's children made of torchvision residual units."""
    stages = [m for m in trunk.children()
              if isinstance(m, nn.Sequential) and len(m) and all(isinstance(u, (Bottleneck, BasicBlock)) for u in m)]
    return {FIRST_STAGE + i: s for i, s in enumerate(stages)}


def temporalize_unit(unit: nn.Module, length: int) -> int:
    """Replace a Bottleneck's 1x1 convolutions (conv1, conv3) by temporal filters; returns how many."""
    count = 0
    for name in ("conv1", "conv3"):
        conv = getattr(unit, name, None)
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1):
            setattr(unit, name, TemporalConv(conv, length))
            count += 1
    return count


class STResNetTrunks(nn.Module):
    """Appearance and motion ResNet trunks run side by side with ST-ResNet's connections.

    `forward(rgb, flow)` maps (B*N, 3, H, W) and (B*N, 2L, H, W) to both spatial maps; the
    backbones' own pooling and heads stay where they are. `temporal=False` keeps the 2D filters
    (only the motion residuals), the reference the conversion is tested against.
    """

    def __init__(self, appearance: nn.Module, motion: nn.Module, *, stages: tuple[int, ...] = (2, 3, 4, 5),
                 length: int = 3, temporal: bool = True):
        super().__init__()
        # the backbones own the trunks (and their parameters); a tuple keeps them unregistered here
        self.trunks = (appearance, motion)
        a_stages, m_stages = resnet_stages(appearance), resnet_stages(motion)
        if not a_stages or set(a_stages) != set(m_stages):
            raise BackboneError("--fusion st-resnet needs two ResNet backbones (torchvision Bottleneck/BasicBlock stages)")
        missing = sorted(set(stages) - set(a_stages))
        if missing:
            raise BackboneError(f"st-resnet stage {missing[0]} does not exist; this ResNet has stages {sorted(a_stages)}")
        self.stages = tuple(sorted(stages))
        self.temporal_filters = 0
        self.connections = 0
        for s in self.stages:
            a_units, m_units = a_stages[s], m_stages[s]
            if len(a_units) < 2 or len(m_units) < 2:
                raise BackboneError(f"stage {s} has a single residual unit; ST-ResNet connects the second one")
            if temporal:
                self.temporal_filters += temporalize_unit(a_units[1], length) + temporalize_unit(m_units[1], length)
            a_units[1] = MotionResidualUnit(a_units[1])
            self.connections += 1

    def set_segments(self, n: int) -> None:
        for trunk in self.trunks:
            for module in trunk.modules():
                if isinstance(module, TemporalConv):
                    module.num_segments = n

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xm = rgb, flow
        appearance, motion = self.trunks
        for layer_a, layer_m in zip(appearance.children(), motion.children()):
            if not (isinstance(layer_a, nn.Sequential) and any(isinstance(u, MotionResidualUnit) for u in layer_a)):
                xa, xm = layer_a(xa), layer_m(xm)
                continue
            for unit_a, unit_m in zip(layer_a, layer_m):
                xa = unit_a(xa, motion=xm) if isinstance(unit_a, MotionResidualUnit) else unit_a(xa)
                xm = unit_m(xm)
        return xa, xm


def collapse_to_2d(trunk: nn.Module) -> nn.Module:
    """A plain 2D copy of an ST-ResNet trunk: temporal filters summed, motion residuals dropped.

    This is what `backbone.pt` holds for per-frame re-extraction; it equals the fine-tuned stream
    on static clips without motion input.
    """
    import copy

    plain = copy.deepcopy(trunk)
    for parent in list(plain.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MotionResidualUnit):
                setattr(parent, name, child.unit)
    for parent in list(plain.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, TemporalConv):
                setattr(parent, name, child.collapsed())
    return plain
