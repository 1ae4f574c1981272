"""What a run trains (a head, two late-fused heads, or one two-stream head) and its checkpoint files.

A model is described by a plain `spec` ({"fusion": ..., "heads": {key: build_head kwargs}}, for late
fusion also the streams' "weights": pipeline.training.fusion) so a checkpoint holds only tensors and
plain types and loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import ConfigError, RunError
from pipeline.faults import fault_point
from pipeline.heads import HEADS, LateFusion, build_head, head_complexity
from pipeline.heads.base import head_options, saved_spec_options
from pipeline.training.config import TrainHeadConfig

CHECKPOINT_FORMAT = 1


def head_input_kind(head: str) -> str:
    return HEADS.meta(head)["input_kind"]


def model_spec(cfg: TrainHeadConfig, *, num_classes: int, frame_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """Build arguments for every head of the run. frame_shapes: {stream: (D,) or (C, H, W)}."""
    cfg = cfg.resolved()
    streams = cfg.streams
    reserved = {"name", "num_classes", "num_segments", "dropout", "proj_dim", "in_dim", "spatial", "streams",
                "temporal_center"}
    clash = sorted(reserved & set(cfg.head_options))
    if clash:
        raise ConfigError(f"head_options: {clash[0]!r} is set by train-head itself; use its own option")
    # every option is recorded, defaults included, so a later change of a default cannot change
    # what a saved run rebuilds
    common = dict(name=cfg.head, num_classes=num_classes, num_segments=cfg.segments, dropout=cfg.dropout,
                  proj_dim=cfg.proj_dim, **head_options(cfg.head, cfg.head_options))
    if cfg.temporal_center:  # absent = 0: a spec without it is what runs before the option saved
        common["temporal_center"] = cfg.temporal_center
    spatial = {s: list(shape[1:]) or None for s, shape in frame_shapes.items()}
    if len(streams) == 1 or cfg.fusion == "late":
        heads = {s: dict(common, in_dim=frame_shapes[s][0], spatial=spatial[s], streams=[s]) for s in streams}
        return {"fusion": "late" if len(streams) > 1 else "single", "heads": heads}
    if HEADS.meta(cfg.head)["max_streams"] < len(streams):
        two_stream = [n for n in HEADS.names() if HEADS.meta(n)["max_streams"] >= len(streams)]
        raise ConfigError(f"--fusion joint needs a two-stream head ({', '.join(two_stream) or 'none'}); "
                          f"{cfg.head!r} is single-stream (use --fusion late)")
    if len({tuple(v or ()) for v in spatial.values()}) > 1:
        raise ConfigError(f"--fusion joint needs rgb and flow maps of one size; got {spatial}")
    in_dim = {s: frame_shapes[s][0] for s in streams}
    return {"fusion": "joint", "heads": {"joint": dict(common, in_dim=in_dim, spatial=spatial[streams[0]],
                                                       streams=list(streams))}}


def check_buildable(cfg: TrainHeadConfig, signature: Mapping[str, Any]) -> None:
    """Build the run's model once from the store signature, so bad head options fail before any work."""
    shapes = {s: tuple(v["frame_shape"]) for s, v in signature["streams"].items()}
    build_model(model_spec(cfg, num_classes=len(signature["classes"]), frame_shapes=shapes))


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """A Head (single stream or joint two-stream) or a LateFusion of one head per stream."""
    heads = {key: build_head(**_build_args(args)) for key, args in spec["heads"].items()}
    if spec["fusion"] == "late":
        return LateFusion(heads, spec.get("weights"))  # no weights (runs before they were chosen): equal
    (head,) = heads.values()
    return head


def _build_args(args: Mapping[str, Any]) -> dict[str, Any]:
    out = saved_spec_options(args["name"], args)
    if out.get("spatial") is not None:
        out["spatial"] = tuple(out["spatial"])
    out["streams"] = tuple(out["streams"])
    return out


def model_complexity(model: nn.Module, spec: Mapping[str, Any]) -> dict[str, int]:
    """Per-clip parameters and multiply-adds, summed over the run's heads (projection included)."""
    heads = [model[k] for k in spec["heads"]] if spec["fusion"] == "late" else [model]
    total = {"projection_params": 0, "head_params": 0, "projection_macs": 0, "head_macs": 0}
    for head in heads:
        for key, value in head_complexity(head).items():
            total[key] += int(value)
    total["params"] = total["projection_params"] + total["head_params"]
    total["macs"] = total["projection_macs"] + total["head_macs"]
    return total


def torch_bytes(obj: Any) -> memoryview:
    """`torch.save` into memory. Written to a file by torch's zip writer, a full disk becomes a
    RuntimeError without errno; by one plain write it is the OSError ENOSPC that stpipe reports."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def save_checkpoint(payload: Mapping[str, Any], path: str | Path) -> None:
    """Atomic write: a crash mid-save leaves the previous file intact."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_bytes(torch_bytes(dict(payload)))
    except OSError:  # a full disk: the torn copy goes, the previous checkpoint stays
        tmp.unlink(missing_ok=True)
        raise
    fault_point("checkpoint")
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint here")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of many kinds
        raise RunError(f"{path}: cannot load checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not an stpipe train-head checkpoint (format {CHECKPOINT_FORMAT})")
    return payload
