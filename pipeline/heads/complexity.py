"""Parameters and multiply-adds of a head, projection and body reported separately.

MACs come from torch's flop counter (torch.utils.flop_counter.FlopCounterMode; MACs = flops / 2).
It counts matmuls and convolutions only (no elementwise ops, pooling, norms or interpolation), which
is also how Table 3 of Köpüklü et al. counts (e.g. ConvLSTM: 8 x 512*1024*9*49 = 1,849.7M on 7x7 maps).
One gap we patch: the CPU LSTM kernel (and cuDNN RNNs) run as fused ops the counter does not see, so
every torch RNN module is counted analytically, T * gates * H * (in + H) per layer and direction,
in place of whatever the counter saw for it (for GRU/RNN on CPU the two agree exactly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.errors import HeadError
from pipeline.heads.base import HEADS, Head, build_head

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rnn_macs(rnn: nn.RNNBase, input_shape: Sequence[int]) -> int:
    """Multiply-adds of the gate matmuls of one torch RNN call on an input of `input_shape`."""
    if len(input_shape) == 2:  # unbatched (T, D)
        steps, batch = input_shape[0], 1
    else:
        steps, batch = (input_shape[1], input_shape[0]) if rnn.batch_first else input_shape[:2]
    gates, hidden, proj = _GATES[rnn.mode], rnn.hidden_size, rnn.proj_size
    out = proj or hidden
    directions = 2 if rnn.bidirectional else 1
    total = 0
    for layer in range(rnn.num_layers):
        width = rnn.input_size if layer == 0 else out * directions
        per_step = gates * hidden * (width + out) + (proj * hidden if proj else 0)
        total += directions * steps * per_step
    return total * batch


def _count_macs(module: nn.Module, x: Any) -> tuple[int, Any]:
    calls: list[tuple[nn.RNNBase, torch.Size]] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: calls.append((mod, args[0].shape)))
        for m in module.modules()
        if isinstance(m, nn.RNNBase)
    ]
    try:
        with FlopCounterMode(display=False) as counter:
            out = module(x)
    finally:
        for hook in hooks:
            hook.remove()
    macs = counter.get_total_flops() // 2
    for rnn, shape in calls:
        with FlopCounterMode(display=False) as seen:
            rnn(torch.zeros(shape, dtype=next(rnn.parameters()).dtype, device=next(rnn.parameters()).device))
        macs += rnn_macs(rnn, shape) - seen.get_total_flops() // 2
    return macs, out


def head_complexity(
    head: Head, input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None
) -> dict[str, int]:
    """Per-clip params and MACs: {projection_params, head_params, projection_macs, head_macs}.

    input_shape is one sample's features, (T, D) or (T, C, H, W) (a dict per stream for multi-stream
    heads); by default (num_segments, in_dim[, *head.spatial]). "head" means the body alone.
    """
    shapes = _input_shapes(head, input_shape)
    param = next(head.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    inputs = {s: torch.zeros((1, *shape), device=device, dtype=dtype) for s, shape in shapes.items()}
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad():
            x = head.prepare(inputs if len(inputs) > 1 else inputs[head.streams[0]])
            projection_macs, z = _count_macs(head.projection, x)
            head_macs, _ = _count_macs(head.body, z)
    finally:
        head.train(was_training)
    return dict(
        projection_params=count_params(head.projection),
        head_params=count_params(head.body),
        projection_macs=projection_macs,
        head_macs=head_macs,
    )


def _input_shapes(head: Head, input_shape: Any) -> dict[str, tuple[int, ...]]:
    if isinstance(input_shape, Mapping):
        return {s: tuple(input_shape[s]) for s in head.streams}
    if input_shape is not None:
        return {s: tuple(input_shape) for s in head.streams}
    if head.input_kind == "spatial" and head.spatial is None:
        raise HeadError(f"head {head.name!r} is spatial: give input_shape (T, C, H, W) or build it with spatial=(H, W)")
    tail = head.spatial if head.input_kind == "spatial" else ()
    return {s: (head.num_segments, d, *tail) for s, d in head.in_dim.items()}


def complexity_table(
    *, num_classes: int, num_segments: int, feature_shape: Sequence[int], proj_dim: int = 256
) -> list[dict[str, Any]]:
    """One row per registered head for features of `feature_shape` ((D,) or (C, H, W)).

    Rows: name, input_kind, summary, applicable, note, and the four complexity numbers (None when
    the head does not apply, with the reason in `note`).
    """
    feature_shape = tuple(int(v) for v in feature_shape)
    if len(feature_shape) not in (1, 3) or min(feature_shape) < 1:
        raise HeadError(f"feature shape must be D or CxHxW with positive sizes, got {feature_shape}")
    spatial = feature_shape[1:] or None
    rows = []
    for name in HEADS.names():
        meta = HEADS.meta(name)
        row: dict[str, Any] = dict(name=name, input_kind=meta["input_kind"], summary=meta["summary"])
        row.update(applicable=False, note="", projection_params=None, head_params=None,
                   projection_macs=None, head_macs=None)
        if meta["input_kind"] == "spatial" and spatial is None:
            row["note"] = f"needs spatial features CxHxW; got pooled {feature_shape[0]}"
        else:
            try:
                head = build_head(name, num_classes=num_classes, num_segments=num_segments,
                                  in_dim=feature_shape[0], spatial=spatial, proj_dim=proj_dim)
            except HeadError as exc:
                row["note"] = str(exc)
            else:
                row.update(head_complexity(head, (num_segments, *feature_shape)), applicable=True)
                if meta["input_kind"] == "pooled" and spatial is not None:
                    row["note"] = f"pools the {spatial[0]}x{spatial[1]} maps first"
        rows.append(row)
    return rows
