"""The flow methods by name: `FLOWS` (TV-L1 in PyTorch, OpenCV's as reference, speed presets) and
`build_flow(name, device=..., **overrides)`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from pipeline.config import from_dict
from pipeline.device import pick_device
from pipeline.flow.base import FlowMethod
from pipeline.flow.tvl1 import TVL1Flow, TVL1Params
from pipeline.registry import Registry

FLOWS: Registry[Callable[..., FlowMethod]] = Registry("flow method")

# Speed/accuracy presets: overrides of OpenCV's defaults, picked from a sweep
# (340x256, one thread; benchmarks/bench_flow.py prints their current cost and EPE, see
# benchmarks/README.md). Fewer warps and outer rounds cost little accuracy; a looser epsilon costs more.
PRESETS: dict[str, dict[str, Any]] = {
    "tvl1-fast": {"warps": 3, "outer_iterations": 3},  # 1.4x faster, mean EPE +9%
    "tvl1-faster": {"warps": 2, "outer_iterations": 2},  # 1.9x faster, mean EPE +51%
    "tvl1-fastest": {"warps": 2, "outer_iterations": 3, "epsilon": 0.02},  # 3.2x faster, mean EPE 2.8x
}


def _params(overrides: dict[str, Any], source: str) -> TVL1Params:
    return from_dict(TVL1Params, overrides, source=source)


@FLOWS.register("tvl1", kind="tvl1", backend="torch")
def build_tvl1(
    *, device: str | torch.device | None = None, max_batch: int = 32, compile: bool = True, check_every: int = 5,
    engine: str = "auto", cuda_graphs: bool = True, **param_overrides: Any,
) -> TVL1Flow:
    """Batched PyTorch TV-L1 (OpenCV's parameters, IPOL's pyramid); any TVL1Params field can be overridden.
    On CUDA the per-level solver is Triton's (`engine="auto"`; see pipeline/flow/triton_tvl1.py)."""
    return TVL1Flow(
        _params(param_overrides, "tvl1"), name="tvl1", device=_device(device), max_batch=max_batch,
        compile=compile, check_every=check_every, engine=engine, cuda_graphs=cuda_graphs,
    )


@FLOWS.register("tvl1-opencv", kind="tvl1", backend="opencv", extra="opencv")
def build_tvl1_opencv(*, device: str | torch.device | None = None, max_batch: int = 32, **param_overrides: Any):
    """OpenCV contrib's DualTVL1 (CPU, one pair at a time); needs the `opencv` extra."""
    from pipeline.flow.opencv_ref import OpenCVTVL1

    param_overrides.setdefault("border", "zeros")  # what cv::remap does; OpenCV offers no other
    param_overrides.setdefault("antialias", False)  # cv::resize at 0.8 does not pre-smooth
    return OpenCVTVL1(_params(param_overrides, "tvl1-opencv"), device=_device(device), max_batch=max_batch)


_OPTIONS = ("device", "max_batch", "compile", "check_every", "engine", "cuda_graphs")  # not TVL1Params fields


def _build_preset(name: str, preset: dict[str, Any], **kwargs: Any) -> TVL1Flow:
    overrides = {k: v for k, v in kwargs.items() if k not in _OPTIONS}
    options = {k: v for k, v in kwargs.items() if k not in overrides}
    method = build_tvl1(**options, **{**preset, **overrides})
    method.name = name
    return method


for _name, _preset in PRESETS.items():
    FLOWS.add(_name, functools.partial(_build_preset, _name, _preset), kind="tvl1", backend="torch", preset=_preset)


def build_flow(name: str = "tvl1", *, device: str | torch.device | None = None, **param_overrides: Any) -> FlowMethod:
    """The flow method registered as `name`; keyword overrides set TVL1Params fields (and, for the
    torch methods, `max_batch`, `compile`, `check_every`, `engine`, `cuda_graphs`)."""
    return FLOWS.get(name)(device=device, **param_overrides)


def _device(device: str | torch.device | None) -> torch.device:
    return device if isinstance(device, torch.device) else pick_device(device)
