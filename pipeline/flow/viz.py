"""Flow pictures: the Middlebury colour wheel (Baker et al., IJCV 2011) and frames-next-to-flow sheets.

Hue gives the direction, saturation the magnitude relative to the largest flow in the picture
(or `max_flow`); white is no motion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.errors import FlowError

# Colour-wheel segments of the Middlebury code: red-yellow, yellow-green, green-cyan, cyan-blue,
# blue-magenta, magenta-red, with these many steps (chosen there for perceptual evenness).
_SEGMENTS = (
    (15, (255, 0, 0), (255, 255, 0)),
    (6, (255, 255, 0), (0, 255, 0)),
    (4, (0, 255, 0), (0, 255, 255)),
    (11, (0, 255, 255), (0, 0, 255)),
    (13, (0, 0, 255), (255, 0, 255)),
    (6, (255, 0, 255), (255, 0, 0)),
)


def color_wheel() -> np.ndarray:
    """(55, 3) float RGB in 0..255."""
    rows = []
    for steps, start, end in _SEGMENTS:
        t = np.arange(steps, dtype=np.float64)[:, None] / steps
        rows.append(np.asarray(start) * (1 - t) + np.asarray(end) * t)
    return np.concatenate(rows)


def flow_to_color(flow: Any, *, max_flow: float | None = None) -> np.ndarray:
    """Flow (2, H, W) or (H, W, 2), numpy or torch -> uint8 RGB (H, W, 3)."""
    f = flow.detach().float().cpu().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow, np.float32)
    if f.ndim == 3 and f.shape[0] == 2:
        u, v = f[0], f[1]
    elif f.ndim == 3 and f.shape[-1] == 2:
        u, v = f[..., 0], f[..., 1]
    else:
        raise FlowError(f"flow_to_color: expected flow of shape (2, H, W) or (H, W, 2), got {f.shape}")
    u = np.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
    v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    radius = np.sqrt(u * u + v * v)
    scale = float(max_flow) if max_flow else float(radius.max())
    scale = max(scale, 1e-6)
    u, v, radius = u / scale, v / scale, radius / scale
    wheel = color_wheel() / 255.0
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # -1..1
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % n
    frac = (fk - k0)[..., None]
    col = (1 - frac) * wheel[k0] + frac * wheel[k1]
    r = radius[..., None]
    col = np.where(r <= 1, 1 - r * (1 - col), col * 0.75)  # saturate with magnitude; dim beyond max
    return np.round(col * 255).clip(0, 255).astype(np.uint8)


def flow_sheet(frames: np.ndarray, flows: Any, *, gap: int = 4) -> np.ndarray:
    """One row per pair: frame t | colour-coded flow t -> t+1, one colour scale for the whole sheet.

    frames (T, H, W, 3) uint8; flows (T-1, 2, H, W). Returns uint8 RGB.
    """
    f = flows.detach().float().cpu().numpy() if isinstance(flows, torch.Tensor) else np.asarray(flows, np.float32)
    if frames.ndim != 4 or f.ndim != 4 or f.shape[0] != frames.shape[0] - 1 or f.shape[-2:] != frames.shape[1:3]:
        raise FlowError(f"flow_sheet: frames {frames.shape} and flows {f.shape} do not match")
    max_flow = float(np.sqrt((f**2).sum(1)).max()) if f.size else 1.0
    h, w = frames.shape[1:3]
    rows = len(f)
    sheet = np.full((rows * (h + gap) - gap, 2 * w + gap, 3), 255, np.uint8)
    for i in range(rows):
        y = i * (h + gap)
        sheet[y : y + h, :w] = frames[i]
        sheet[y : y + h, w + gap :] = flow_to_color(f[i], max_flow=max_flow)
    return sheet


def video_flow_sheet(
    video: Any, *, frames: int = 4, method: str = "tvl1", short_side: int | None = 256, start: float | None = None,
    device: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode `frames` frames of `video`, compute their flow, lay out frames next to flow.

    Returns the sheet (uint8 RGB) and a few facts for the caller to report.
    """
    import time

    from pipeline.flow.methods import build_flow
    from pipeline.video import FrameSelection, read_frames

    if frames < 2:
        raise FlowError(f"--frames must be >= 2 to show flow, got {frames}")
    clip = read_frames(video, start=start, select=FrameSelection(max_frames=frames), short_side=short_side)
    if len(clip) < 2:
        raise FlowError(f"{video}: only {len(clip)} frame(s) decoded; flow needs 2")
    flow_method = build_flow(method, device=device)
    began = time.perf_counter()
    flows = flow_method(clip[None])[0].cpu()
    seconds = time.perf_counter() - began
    magnitude = flows.norm(dim=1)
    facts = {
        "frames": len(clip), "height": clip.shape[1], "width": clip.shape[2], "method": flow_method.name,
        "max_flow": float(magnitude.max()), "mean_flow": float(magnitude.mean()), "seconds": seconds,
    }
    return flow_sheet(clip, flows), facts
