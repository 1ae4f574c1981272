"""Optical flow: a registry of methods (methods.py: batched TV-L1 in PyTorch, OpenCV's as
reference, presets), storage quantisation and colour-wheel pictures.

    >>> method = build_flow("tvl1")                  # device: CUDA when present, else CPU
    >>> flow = method(frames)                        # (B, T, H, W[, 3]) -> (B, T-1, 2, H, W)
    >>> flow = method.pairs(prev, nxt)               # (B, H, W[, 3]) x 2 -> (B, 2, H, W)
    >>> q = quantize_flow(flow, bound=20.0)          # uint8, two-stream convention
"""

from __future__ import annotations

from pipeline.flow.base import FlowMethod
from pipeline.flow.methods import FLOWS, PRESETS, build_flow
from pipeline.flow.quantize import dequantize_flow, quantize_flow
from pipeline.flow.tvl1 import TVL1Flow, TVL1Params
from pipeline.flow.viz import flow_to_color

__all__ = [
    "FLOWS",
    "PRESETS",
    "FlowMethod",
    "TVL1Flow",
    "TVL1Params",
    "build_flow",
    "dequantize_flow",
    "flow_to_color",
    "quantize_flow",
]
