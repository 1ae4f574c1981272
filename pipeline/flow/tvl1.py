"""Batched TV-L1 optical flow in PyTorch (CPU and CUDA from one code).

The duality-based TV-L1 of Zach, Pock & Bischof (2007) with the scheme of OpenCV's
`DualTVL1OpticalFlow` / Sánchez Pérez, Meinhardt-Llopis & Facciolo (IPOL 2013): a coarse-to-fine
pyramid (factor `scale_step`, Gaussian pre-smoothing then bilinear), `warps` re-linearisations per
scale (bicubic warping of I1 and its central-difference gradient), and per warp up to
`outer_iterations` x `inner_iterations` primal-dual steps with a median filter of the flow before
each outer round; dual variables start at zero on every level. A pair stops when its squared
update sum drops to epsilon^2 * pixels, exactly as in OpenCV (checked every iteration). The
numerical parameters default to OpenCV 4.x/5.0 contrib's.

Where we differ from OpenCV, on purpose:
- the pyramid goes down to `min_size` (16 px) as IPOL's does (`scales=0`), not OpenCV's 5 levels:
  at 340x256 OpenCV's coarsest level is 0.41x, where a 25 px motion is still 10 px, beyond what
  linearisation recovers; with all 13 levels the large-motion family of benchmarks/bench_flow.py
  drops from 8.9 px EPE to about 0.3 px, and the small-motion families improve too;
- each level is pre-smoothed before the downscale (`antialias`, IPOL's zoom_out: sigma =
  0.6 sqrt(1/scale_step^2 - 1)); OpenCV's cv::resize at 0.8 aliases fine texture instead;
- levels are resized, and the flow scaled between them, by the true size ratio of two levels
  (OpenCV and IPOL resample images at exactly scale_step and scale the flow by 1/scale_step, but
  resample the flow by the size ratio, so their levels disagree by up to half a pixel). Large motions
  are bistable (a small fast object is found or lost), and this alone flips single pairs either way;
  with OpenCV's sampling, zeros border and no pre-smoothing the solver gives OpenCV's EPE within 0.6%
  on every family of benchmarks/bench_flow.py (tests/test_flow.py checks it on one pair);
- grey conversion of RGB is done in float (OpenCV rounds to uint8 first); the illumination term
  `gamma` (0 by default in OpenCV) is not implemented;
- outside the image the warp replicates the border (IPOL's Neumann condition), and a pixel whose
  match x + u leaves the image gets no data term (the TV term fills its flow in); IPOL's TV-L1 drops
  the data term as soon as one of the 16 bicubic taps leaves the image (1-2 px earlier), OpenCV
  reads zeros there (`border="zeros"`), which fakes an edge within the bicubic support.
`scales=5, antialias=False, border="zeros"` is OpenCV's own defaults up to that sampling.

Speed comes from batching pairs, fusing `check_every` primal-dual steps into one compiled call,
dropping converged pairs from the batch between calls, and a branch-free compiled median.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.config import config_to_dict
from pipeline.errors import ConfigError
from pipeline.flow import kernels
from pipeline.flow.base import FlowMethod


@dataclass(frozen=True)
class TVL1Params:
    """TV-L1 parameters; names follow OpenCV's getters, defaults equal OpenCV's but for the pyramid."""

    tau: float = 0.25  # dual step size (stable for tau <= 1/8 per Chambolle; OpenCV uses 0.25)
    lambda_: float = 0.15  # weight of the data term (higher = less smooth)
    theta: float = 0.3  # coupling of u and v in the convex relaxation
    # pyramid levels at most; 0 = as many as min_size allows (IPOL's rule; OpenCV's default of 5
    # levels of 0.8 leaves 20-30 px motions at 8-12 px on its coarsest level, where they are lost)
    scales: int = 0
    warps: int = 5  # re-linearisations per level
    epsilon: float = 0.01  # stop when mean squared update <= epsilon^2 (per pixel)
    inner_iterations: int = 30  # primal-dual steps per outer round
    outer_iterations: int = 10  # median-filtered rounds per warp
    scale_step: float = 0.8  # size ratio between consecutive levels
    median_filtering: int = 5  # median window before each outer round; 0 or 1 = off
    min_size: int = 16  # pyramid stops before a side gets smaller than this (OpenCV: 16)
    # Gaussian pre-smoothing before each downscale (IPOL: sigma = 0.6 sqrt(1/scale_step^2 - 1));
    # OpenCV resizes without it, which aliases fine texture into the coarse levels
    antialias: bool = True
    # outside the image the warped I1 is the replicated border (IPOL's Neumann condition) and pixels
    # matched outside get no data term (lower EPE where the flow leaves the frame, see
    # benchmarks/README.md), or 0 (cv::remap's default, which OpenCV's DualTVL1 uses; "zeros")
    border: Literal["zeros", "replicate"] = "replicate"

    def __post_init__(self) -> None:
        positive = ("tau", "lambda_", "theta", "warps", "inner_iterations", "outer_iterations", "min_size")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"TVL1Params.{name} must be > 0, got {getattr(self, name)!r}")
        if self.scales < 0:
            raise ConfigError(f"TVL1Params.scales must be >= 0 (0 = as many as fit), got {self.scales!r}")
        if self.epsilon < 0:
            raise ConfigError(f"TVL1Params.epsilon must be >= 0, got {self.epsilon!r}")
        if not 0 < self.scale_step < 1:
            raise ConfigError(f"TVL1Params.scale_step must be in (0, 1), got {self.scale_step!r}")
        if self.median_filtering > 1 and self.median_filtering % 2 == 0 or self.median_filtering < 0:
            raise ConfigError(f"TVL1Params.median_filtering must be 0, 1 or odd, got {self.median_filtering!r}")
        if self.border not in ("zeros", "replicate"):
            raise ConfigError(f"TVL1Params.border must be 'zeros' or 'replicate', got {self.border!r}")


class TVL1Flow(FlowMethod):
    """Batched TV-L1. `compile=False` runs eager (same numbers, several times slower).

    `check_every` primal-dual steps run per compiled call; pairs that converged inside a call are
    frozen at their exact stopping iteration and leave the batch afterwards, so results do not
    depend on it (only speed and compile time do).
    """

    def __init__(
        self,
        params: TVL1Params | None = None,
        *,
        name: str = "tvl1",
        device: torch.device,
        max_batch: int = 32,
        compile: bool = True,
        check_every: int = 5,
        cpu_group_pixels: int = 200_000,
        engine: Literal["auto", "torch", "triton"] = "auto",
        cuda_graphs: bool = True,
    ):
        self.config = params or TVL1Params()
        super().__init__(device=device, params=config_to_dict(self.config), max_batch=max_batch)
        self.name = name
        self.compile = compile
        self.check_every = max(1, int(check_every))
        # On CPU a batch runs in groups of at most this many pixels, so each group's state stays in
        # the caches across steps (batch 8 of 340x256 in one piece is ~20% slower per pair).
        self.cpu_group_pixels = int(cpu_group_pixels)
        self.engine = _pick_engine(engine, device, self.config)
        self.cuda_graphs = cuda_graphs
        self._triton = None
        if self.engine == "triton":
            from pipeline.flow.triton_tvl1 import TritonLevelSolver

            self._triton = TritonLevelSolver(self.config, device, graphs=cuda_graphs)
        self._pixel_iterations = 0

    @property
    def pixel_iterations(self) -> int:
        """Primal-dual steps x pixels actually computed (for benchmarks; syncs with the device)."""
        extra = int(self._triton.pixel_steps) if self._triton is not None else 0
        return self._pixel_iterations + extra

    def with_params(self, **overrides) -> TVL1Flow:
        return TVL1Flow(
            dataclasses.replace(self.config, **overrides),
            name=self.name,
            device=self.device,
            max_batch=self.max_batch,
            compile=self.compile,
            check_every=self.check_every,
            cpu_group_pixels=self.cpu_group_pixels,
            engine=self.engine,
            cuda_graphs=self.cuda_graphs,
        )

    # ---- pyramid ----------------------------------------------------------------------------

    def _flow(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        n, h, w = i0.shape
        group = max(1, self.cpu_group_pixels // (h * w)) if self.device.type == "cpu" else n
        if group < n:
            return torch.cat([self._pyramid(i0[s : s + group], i1[s : s + group]) for s in range(0, n, group)])
        return self._pyramid(i0, i1)

    def _pyramid(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        levels = [(i0, i1)]
        for size in pyramid_sizes(*i0.shape[-2:], cfg)[1:]:
            levels.append(tuple(_downscale(x, size, cfg.scale_step if cfg.antialias else 0.0) for x in levels[-1]))
        n, (h, w) = i0.shape[0], levels[-1][0].shape[-2:]
        u = i0.new_zeros(n, 2, h, w)
        for a, b in reversed(levels):
            if u.shape[-2:] != a.shape[-2:]:
                u = _upsample_flow(u, a.shape[-2:])
            u = self._solve_level(a, b, u)
        return u

    def _solve_level(self, i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        i1x, i1y = kernels.centered_gradient(i1)
        images = torch.stack([i1, i1x, i1y, i0], 1)
        if self._triton is not None:
            return self._triton.solve(images, u)
        p = u.new_zeros(u.shape[0], 4, *u.shape[-2:])  # dual variables persist across warps
        consts = torch.tensor(
            [cfg.lambda_ * cfg.theta, cfg.theta, cfg.tau / cfg.theta, cfg.epsilon], device=u.device
        )
        for _ in range(cfg.warps):
            data = kernels.warp_compiled(images, u, cfg.border == "replicate", compiled=self.compile)
            u, p = self._iterate(u, p, data, consts)
        return u

    # ---- one warp: primal-dual rounds with per-pair stopping --------------------------------

    def _iterate(self, u, p, data, consts):
        """Run one warp's iterations; converged pairs leave the working batch between calls."""
        cfg = self.config
        pixels = u.shape[-1] * u.shape[-2]
        idx = None  # indices of the working batch in the full batch (None = all)
        uw, pw, dw = u, p, data
        active = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
        for _ in range(cfg.outer_iterations):
            if cfg.median_filtering > 1:
                uw = kernels.median_filter(uw, cfg.median_filtering, compiled=self.compile)
            done = 0
            while done < cfg.inner_iterations:
                steps = min(self.check_every, cfg.inner_iterations - done)
                uw, pw, active = kernels.primal_dual_compiled(uw, pw, dw, active, consts, steps, compiled=self.compile)
                self._pixel_iterations += steps * uw.shape[0] * pixels
                done += steps
                still = int(active.sum())
                if still == active.shape[0]:
                    continue
                # write the working batch back, keep only the pairs still running
                if idx is None:
                    u, p = uw, pw
                else:
                    u.index_copy_(0, idx, uw)
                    p.index_copy_(0, idx, pw)
                if still == 0:
                    return u, p
                keep = active.nonzero()[:, 0]
                idx = keep if idx is None else idx[keep]
                uw, pw, dw, active = u[idx], p[idx], data[idx], active[keep]
        if idx is None:
            return uw, pw
        u.index_copy_(0, idx, uw)
        p.index_copy_(0, idx, pw)
        return u, p


def _pick_engine(engine: str, device: torch.device, params: TVL1Params) -> str:
    """`auto`: the Triton solver on CUDA (device-side stopping, CUDA graphs), the generic one elsewhere.
    STPIPE_FLOW_ENGINE=torch forces the generic solver (e.g. to compare the two on a GPU)."""
    from pipeline.flow import triton_tvl1

    if engine not in ("auto", "torch", "triton"):
        raise ConfigError(f"TV-L1 engine must be auto, torch or triton, got {engine!r}")
    if engine == "auto":
        forced = os.environ.get("STPIPE_FLOW_ENGINE", "")
        if forced in ("torch", "triton"):
            engine = forced
        else:
            return "triton" if device.type == "cuda" and triton_tvl1.available(device, params) is None else "torch"
    if engine == "triton" and (reason := triton_tvl1.available(device, params)) is not None:
        raise ConfigError(f"TV-L1 engine 'triton' is not available: {reason}")
    return engine


def pyramid_sizes(height: int, width: int, cfg: TVL1Params) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level, finest first: sides shrink by scale_step (rounded, as
    cv::resize rounds) until `scales` levels or until a side would drop below min_size."""
    sizes = [(height, width)]
    while cfg.scales == 0 or len(sizes) < cfg.scales:
        h, w = sizes[-1]
        size = (round(h * cfg.scale_step), round(w * cfg.scale_step))
        if min(size) < cfg.min_size:
            break
        sizes.append(size)
    return sizes


def _downscale(img: torch.Tensor, size: tuple[int, int], antialias_step: float) -> torch.Tensor:
    """Bilinear resize (as cv::resize(INTER_LINEAR), which does not anti-alias at 0.8), after a
    Gaussian blur of sigma 0.6 sqrt(1/step^2 - 1) when `antialias_step` > 0, as IPOL's zoom_out."""
    x = img[:, None]
    if antialias_step > 0:
        sigma = 0.6 * (1.0 / antialias_step**2 - 1.0) ** 0.5
        r = max(1, math.ceil(3 * sigma))
        k = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-r, r + 1)]
        k = [v / sum(k) for v in k]
        h, w = img.shape[-2:]
        # separable taps as shifted sums, not conv2d: a pair's result must not depend on the batch
        # it runs in (conv2d picks its algorithm by batch size, and the last bits differ)
        x = F.pad(x, (r, r, r, r), mode="replicate")
        x = sum(k[i] * x[..., i : i + w] for i in range(2 * r + 1))
        x = sum(k[i] * x[..., i : i + h, :] for i in range(2 * r + 1))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0]


def _upsample_flow(u: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = u.shape[-2:]
    up = F.interpolate(u, size=tuple(size), mode="bilinear", align_corners=False)
    ratio = torch.tensor([size[1] / w, size[0] / h], device=u.device, dtype=u.dtype)
    return up * ratio[:, None, None]
