"""The heads compared by Köpüklü et al., "Comparative Analysis of CNN-based Spatiotemporal Reasoning
in Videos" (ICPR 2020; sec. 3 and Tables 1-3): MLP, TSN, TRN, RNNs, ConvLSTM and FCNs, on 256-d
projected features.

Layer definitions follow the paper and match its Table 3 exactly (tests/test_heads.py; 27 classes,
8 segments: mlp 1,062,939 ... fcn3d 1,556,571 parameters, projection excluded). Where the text is
silent we follow the code bases it builds on (TSN/TRN) and PyTorch defaults:
- initialisation: PyTorch defaults for every layer here (those code bases do not re-initialise
  their consensus modules); the projection has its own init (see projection.py);
- conv layers keep their bias even when BatchNorm follows (the paper's parameter counts include it);
- the MLP's hidden Dropout (as the project's spec defines it; the MFF code has it commented out) uses the
  head's `dropout` rate;
- ConvLSTM has no peephole terms (the 4.73M parameters leave no room for them) and starts from zero
  state; RNN heads read the last step, B-LSTM the forward state at t=T joined with the backward
  state at t=1;
- FCN average pooling is global over what is left of (time, width) or (time, H, W), so fcn2d/fcn3d
  accept any number of segments and any feature width (the paper's N x 8 / D/8 x W x H windows
  are that global pool at its sizes).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from pipeline.heads.base import register_head
from pipeline.heads.recipes import RECIPES

# ---- MLP family ---------------------------------------------------------------------------------


class OrderedMLP(nn.Module):
    """Concatenate the T features in order, then ReLU-Linear(T*D, 512)-Dropout-ReLU-Linear(512, C)."""

    def __init__(self, *, num_segments: int, dim: int, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.ReLU(),
            nn.Linear(num_segments * dim, hidden),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(1))


class TemporalMean(nn.Module):
    """TSN's even averaging consensus over per-segment class scores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def sample_relations(
    num_segments: int, scale: int, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`count` distinct ordered `scale`-frame relations, uniformly at random, as a (k, scale) tensor.

    Every relation when there are no more than `count` of them (k = min(count, C(T, scale))).
    """
    total = math.comb(num_segments, scale)
    if total <= count:
        return torch.tensor(list(itertools.combinations(range(num_segments), scale)), dtype=torch.long)
    chosen: dict[tuple[int, ...], None] = {}
    while len(chosen) < count:  # rejection keeps the draw uniform without replacement
        picked = torch.randperm(num_segments, generator=generator)[:scale].sort().values
        chosen[tuple(picked.tolist())] = None
    return torch.tensor(sorted(chosen), dtype=torch.long)


class TRNMultiScale(nn.Module):
    """Multi-scale TRN: for every scale s = T..2 an MLP over ordered s-frame relations, summed.

    One relation at scale T, `relations_per_scale` sampled relations at each smaller scale: drawn
    afresh from torch's RNG at every training forward (as TRN's code does with numpy), fixed in eval
    to a set drawn once from `relation_seed` and stored as buffers (so saved heads evaluate the same).
    """

    def __init__(
        self,
        *,
        num_segments: int,
        dim: int,
        num_classes: int,
        hidden: int = 256,
        relations_per_scale: int = 3,
        relation_seed: int = 0,
    ):
        super().__init__()
        self.num_segments = num_segments
        self.relations_per_scale = relations_per_scale
        self.scales = list(range(num_segments, 1, -1))
        self.fusion = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(s * dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
            for s in self.scales
        )
        generator = torch.Generator().manual_seed(relation_seed)
        for s in self.scales:
            self.register_buffer(
                f"eval_relations_{s}", sample_relations(num_segments, s, relations_per_scale, generator)
            )

    def relations(self, scale: int, device: torch.device | None = None) -> torch.Tensor:
        """(k, scale) frame indices, on `device` (default: where they are made or kept)."""
        if not self.training:
            rel = getattr(self, f"eval_relations_{scale}")
            return rel if device is None else rel.to(device)
        # drawn on the CPU (the same draws on every device); on CUDA copied from pinned memory without
        # blocking, since a plain copy would wait for the GPU once per scale and step
        rel = sample_relations(self.num_segments, scale, self.relations_per_scale)
        if device is not None and device.type == "cuda":
            return rel.pin_memory().to(device, non_blocking=True)
        return rel if device is None else rel.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(())
        for scale, mlp in zip(self.scales, self.fusion):
            rel = self.relations(scale, x.device)  # (k, s)
            out = out + mlp(x[:, rel].flatten(2)).sum(dim=1)  # (B, k, s*D) -> (B, C)
        return out


@register_head("mlp", recipe=RECIPES["mlp"], input_kind="pooled", fixed_length=True,
               summary="ordered concatenation -> 2-layer MLP (Köpüklü et al. 3.2.1)")
def mlp(*, num_classes: int, num_segments: int, dim: int, dropout: float, hidden: int = 512) -> nn.Module:
    return OrderedMLP(num_segments=num_segments, dim=dim, num_classes=num_classes, hidden=hidden, dropout=dropout)


@register_head("tsn", recipe=RECIPES["tsn"], input_kind="pooled", projects_to="classes",
               summary="average of per-segment class scores (TSN, Köpüklü et al. 3.2.2)")
def tsn() -> nn.Module:
    return TemporalMean()


@register_head("trn_multiscale", recipe=RECIPES["trn_multiscale"], input_kind="pooled", min_segments=2, fixed_length=True,
               summary="multi-scale temporal relations, 3 per scale (TRN, Köpüklü et al. 3.2.3)")
def trn_multiscale(
    *, num_classes: int, num_segments: int, dim: int, hidden: int = 256,
    relations_per_scale: int = 3, relation_seed: int = 0,
) -> nn.Module:
    return TRNMultiScale(
        num_segments=num_segments, dim=dim, num_classes=num_classes, hidden=hidden,
        relations_per_scale=relations_per_scale, relation_seed=relation_seed,
    )


# ---- RNN family ---------------------------------------------------------------------------------


class LastStepRNN(nn.Module):
    """Any torch RNN over the sequence; its output at the last step -> Linear."""

    def __init__(self, rnn: nn.RNNBase, num_classes: int):
        super().__init__()
        self.rnn = rnn
        self.fc = nn.Linear(rnn.hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class BidirectionalLSTM(nn.Module):
    """B-LSTM with half the hidden size per direction; forward h_T joined with backward h_1."""

    def __init__(self, *, dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.rnn = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        h = self.rnn.hidden_size
        return self.fc(torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=1))


def _rnn_head(kind: str, **rnn_kw):
    def build(*, num_classes: int, dim: int, hidden: int | None = None) -> nn.Module:
        rnn = getattr(nn, kind)(dim, hidden or dim, batch_first=True, **rnn_kw)
        return LastStepRNN(rnn, num_classes)

    return build


for _name, _kind, _kw, _what in [
    ("rnn_tanh", "RNN", {"nonlinearity": "tanh"}, "vanilla RNN, tanh"),
    ("rnn_relu", "RNN", {"nonlinearity": "relu"}, "vanilla RNN, ReLU"),
    ("lstm", "LSTM", {}, "LSTM"),
    ("gru", "GRU", {}, "GRU"),
]:
    register_head(_name, recipe=RECIPES[_name], input_kind="pooled", summary=f"{_what}, last output -> Linear (Köpüklü et al. 3.3)")(
        _rnn_head(_kind, **_kw)
    )


@register_head("blstm", recipe=RECIPES["blstm"], input_kind="pooled",
               summary="bidirectional LSTM, 128 per direction (Köpüklü et al. 3.3.3)")
def blstm(*, num_classes: int, dim: int, hidden: int | None = None) -> nn.Module:
    return BidirectionalLSTM(dim=dim, hidden=hidden or dim // 2, num_classes=num_classes)


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell (Shi et al.) without peepholes: one conv over [x, h] gives the four gates."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMHead(nn.Module):
    def __init__(self, *, dim: int, hidden: int, kernel_size: int, num_classes: int):
        super().__init__()
        self.cell = ConvLSTMCell(dim, hidden, kernel_size)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
        b, _, _, height, width = x.shape
        h = x.new_zeros(b, self.cell.hidden, height, width)
        c = torch.zeros_like(h)
        for step in x.unbind(1):
            h, c = self.cell(step, h, c)
        return self.fc(h.mean(dim=(-2, -1)))


@register_head("convlstm", recipe=RECIPES["convlstm"], input_kind="spatial",
               summary="ConvLSTM 3x3 on the maps, last state avg-pooled -> Linear (Köpüklü et al. 3.3.4)")
def convlstm(*, num_classes: int, dim: int, hidden: int | None = None, kernel_size: int = 3) -> nn.Module:
    return ConvLSTMHead(dim=dim, hidden=hidden or dim, kernel_size=kernel_size, num_classes=num_classes)


# ---- FCN family ---------------------------------------------------------------------------------


def _conv_bn_relu(conv: nn.Module, channels: int, norm: type[nn.Module]) -> list[nn.Module]:
    return [conv, norm(channels), nn.ReLU(inplace=True)]


class FCN2D(nn.Module):
    """The (T x D) feature matrix as a 1-channel image; 3x3 convs with stride (1, 2) halve the
    feature axis and keep time; 1x1 conv to classes; global average pool (Köpüklü et al. Table 1)."""

    def __init__(self, *, num_classes: int, channels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        prev = 1
        for ch in channels:
            layers += _conv_bn_relu(nn.Conv2d(prev, ch, 3, stride=(1, 2), padding=1), ch, nn.BatchNorm2d)
            prev = ch
        layers.append(nn.Conv2d(prev, num_classes, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return self.net(x.unsqueeze(1)).mean(dim=(-2, -1))


class FCN3D(nn.Module):
    """3x3x3 convs with stride (2, 1, 1) halve time and keep the map; 1x1x1 conv to classes;
    global average pool (Köpüklü et al. Table 2)."""

    def __init__(self, *, dim: int, num_classes: int, channels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        prev = dim
        for ch in channels:
            layers += _conv_bn_relu(nn.Conv3d(prev, ch, 3, stride=(2, 1, 1), padding=1), ch, nn.BatchNorm3d)
            prev = ch
        layers.append(nn.Conv3d(prev, num_classes, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
        return self.net(x.transpose(1, 2)).mean(dim=(-3, -2, -1))


@register_head("fcn2d", recipe=RECIPES["fcn2d"], input_kind="pooled",
               summary="2D FCN over the T x 256 feature matrix (Köpüklü et al. 3.4.1)")
def fcn2d(*, num_classes: int, channels: tuple[int, ...] = (64, 64, 128, 128, 256)) -> nn.Module:
    return FCN2D(num_classes=num_classes, channels=tuple(channels))


@register_head("fcn3d", recipe=RECIPES["fcn3d"], input_kind="spatial",
               summary="3D FCN over the T x 256 x H x W volume (Köpüklü et al. 3.4.2)")
def fcn3d(*, num_classes: int, dim: int, channels: tuple[int, ...] = (64, 128, 256)) -> nn.Module:
    return FCN3D(dim=dim, num_classes=num_classes, channels=tuple(channels))
