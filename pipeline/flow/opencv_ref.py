"""OpenCV's DualTVL1 as a flow method: the reference we compare against (optional `opencv` extra)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.config import config_to_dict
from pipeline.errors import ConfigError, MissingDependencyError
from pipeline.flow.base import FlowMethod
from pipeline.flow.tvl1 import TVL1Params, pyramid_sizes


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError(
            "flow method 'tvl1-opencv' needs OpenCV with contrib modules: pip install 'stpipe-video[opencv]'"
        ) from None
    if not hasattr(cv2, "optflow"):
        raise MissingDependencyError(
            "flow method 'tvl1-opencv' needs cv2.optflow (opencv-contrib); pip install 'stpipe-video[opencv]'"
        )
    return cv2


class OpenCVTVL1(FlowMethod):
    """cv2.optflow.DualTVL1OpticalFlow, one pair at a time on the CPU, same parameters as ours.

    Frames go in as float32 grey in [0, 1] (OpenCV scales float input by 255), so both methods see
    exactly the same intensities. Threads: OpenCV's own pool (cv2.setNumThreads). `scales=0` (as
    many levels as fit) is passed on as that count for each frame size.
    """

    def __init__(self, params: TVL1Params | None = None, *, name: str = "tvl1-opencv", device: torch.device,
                 max_batch: int = 32):
        self.config = params or TVL1Params(border="zeros", antialias=False)
        cfg = self.config
        if cfg.border != "zeros" or cfg.min_size != 16 or cfg.antialias:
            raise ConfigError("tvl1-opencv: OpenCV fixes border='zeros', min_size=16 and antialias=False; "
                              "they cannot be changed")

        super().__init__(device=device, params=config_to_dict(cfg), max_batch=max_batch)
        self.name = name
        self._impl = _cv2().optflow.DualTVL1OpticalFlow_create(
            tau=cfg.tau, lambda_=cfg.lambda_, theta=cfg.theta, nscales=max(cfg.scales, 1), warps=cfg.warps,
            epsilon=cfg.epsilon, innnerIterations=cfg.inner_iterations, outerIterations=cfg.outer_iterations,
            scaleStep=cfg.scale_step, gamma=0.0, medianFiltering=cfg.median_filtering, useInitialFlow=False,
        )

    def _flow(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        a = (i0 / 255.0).cpu().numpy().astype(np.float32)
        b = (i1 / 255.0).cpu().numpy().astype(np.float32)
        # OpenCV lowers its own nscales when the pyramid hits 16 px, so set it for every call
        self._impl.setScalesNumber(len(pyramid_sizes(*a.shape[-2:], self.config)))
        out = [self._impl.calc(x, y, None) for x, y in zip(a, b)]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(self.device)
