"""`stpipe flow-viz VIDEO -o PNG`: a video's frames next to their colour-coded optical flow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import DEVICE, arg


@dataclass(frozen=True)
class FlowVizConfig:
    video: str = arg("", positional=True, required=True)
    output: str = arg("", "PNG to write.", short="-o", required=True)
    frames: int = arg(4, "Frames to show; flow is drawn between consecutive ones.")
    start: float | None = arg(None, "Start time in seconds (default: the first frame).")
    method: str = arg("tvl1", "Flow method (see `stpipe flows`).")
    short_side: int = arg(256, "Resize so the shorter side is this.")
    device: str = arg("", DEVICE)


def run(cfg: FlowVizConfig) -> str:
    """Write the PNG (Middlebury colour wheel); one line saying what it shows."""
    from PIL import Image

    from pipeline.flow.viz import video_flow_sheet

    sheet, facts = video_flow_sheet(cfg.video, frames=cfg.frames, method=cfg.method, short_side=cfg.short_side,
                                    start=cfg.start, device=cfg.device or None)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(output)
    return (f"wrote {output}: {facts['frames']} frames {facts['width']}x{facts['height']}, {facts['method']} flow "
            f"in {facts['seconds']:.1f} s, max {facts['max_flow']:.1f} px, mean {facts['mean_flow']:.2f} px")
