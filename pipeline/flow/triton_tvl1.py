"""TV-L1's per-level solver on CUDA: four Triton kernels, stopping decided on the device, CUDA graphs.

Why a second solver: the generic one (tvl1.py + kernels.py under torch.compile) checks every
`check_every` steps on the host whether pairs have converged and drops them from the batch. On a
CPU that is free; on a GPU each check is a device sync and each step a handful of small launches
from Python (an H200 ran it at 26-42 pairs/s at 340x256, a few percent of its memory bandwidth).

Here one level of one batch is a fixed sequence of launches with no host decision in it:
- each pair's squared update is summed per tile into `parts`; every program of the next step sums
  its pair's tiles in a fixed order (so all programs agree, and runs are deterministic) and compares
  with epsilon^2 * pixels: OpenCV's stopping rule, per pair, exactly at the iteration it fires;
- programs of pairs that have stopped return at once, so a converged pair costs a few bytes a step;
- the fixed sequence (warps x outer x inner steps) is captured once per (batch, height, width) in a
  CUDA graph and replayed: one launch per level instead of thousands.

The math is that of kernels.py (primal-dual step, Batcher median, Keys bicubic warp), with the
primal and dual halves of a step as two kernels (84 bytes per pixel-step instead of the 124 that
inductor's four loops move). Results equal the generic solver's up to float summation order;
tests/test_flow.py runs both on CPU through Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict

import torch

try:
    import triton
    import triton.language as tl

    from pipeline.flow.triton_median import median3, median5
except ImportError:  # CPU-only installs without Triton: the generic solver runs
    triton = None

MEDIAN_SIZES = (0, 1, 3, 5)  # median_filtering values this solver implements (0 and 1: off)

PRIMAL_BLOCK = 1024  # pixels per program of the step kernels
MEDIAN_BLOCK = 512  # pixels per program of the median
# buffer sets (+ graphs) kept per solver, least recently used dropped first: a few videos' shapes
# stay cached (batch 64 at 340x256 holds ~0.5 GB over its levels) while odd sizes come and go
MAX_CACHED_BYTES = 2 << 30


def available(device: torch.device, params=None) -> str | None:
    """None when this solver can run on `device` (with `params`), else the reason it cannot."""
    if triton is None:
        return "Triton is not installed"
    if params is not None and params.median_filtering not in MEDIAN_SIZES:
        return f"median_filtering={params.median_filtering} (the Triton solver has {MEDIAN_SIZES[2:]})"
    if device.type == "cuda":
        return None
    if interpreted():
        return None
    return f"the Triton solver needs a CUDA device (got {device.type}; TRITON_INTERPRET=1 runs it on CPU for tests)"


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if triton is not None:

    @triton.jit
    def _active(parts_ptr, n, tiles, stop, TILES_P2: tl.constexpr):
        """Has pair n still been moving after the previous step? (sum of its tile partials > stop)"""
        t = tl.arange(0, TILES_P2)
        return tl.sum(tl.load(parts_ptr + n * tiles + t, mask=t < tiles, other=0.0), 0) > stop

    @triton.jit
    def _tile(tile, hw, width, BLOCK: tl.constexpr):
        """This program's pixels of one pair: flat offsets, in-image mask, column and row."""
        offs = tile * BLOCK + tl.arange(0, BLOCK)
        return offs, offs < hw, offs % width, offs // width

    @triton.jit
    def _cubic(t):
        """Keys cubic convolution weights (a = -0.75, as cv::remap INTER_CUBIC) for taps -1..2."""
        a = -0.75
        s = 1.0 - t
        w0 = ((a * (t + 1.0) - 5.0 * a) * (t + 1.0) + 8.0 * a) * (t + 1.0) - 4.0 * a
        w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
        w2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
        return w0, w1, w2, 1.0 - w0 - w1 - w2

    @triton.jit
    def _tap(w0, w1, w2, w3, K: tl.constexpr):
        """The weight of tap K (resolved at compile time: Triton cannot index a tuple of tensors)."""
        if K == 0:
            w = w0
        elif K == 1:
            w = w1
        elif K == 2:
            w = w2
        else:
            w = w3
        return w

    @triton.jit
    def _warp_kernel(img_ptr, u_ptr, out_ptr, height, width, hw, REPLICATE: tl.constexpr, BLOCK: tl.constexpr):
        """(I1, I1x, I1y, I0) warped by u -> (I1wx, I1wy, rho_c): kernels.warp_data for one tile."""
        n = tl.program_id(0).to(tl.int64)
        offs, m, col, row = _tile(tl.program_id(1), hw, width, BLOCK)
        img, u = img_ptr + n * 4 * hw, u_ptr + n * 2 * hw
        u1 = tl.load(u + offs, mask=m, other=0.0)
        u2 = tl.load(u + hw + offs, mask=m, other=0.0)
        x = tl.minimum(tl.maximum(col.to(tl.float32) + u1, -3.0), width + 2.0)
        y = tl.minimum(tl.maximum(row.to(tl.float32) + u2, -3.0), height + 2.0)
        x0, y0 = tl.floor(x), tl.floor(y)
        wx0, wx1, wx2, wx3 = _cubic(x - x0)
        wy0, wy1, wy2, wy3 = _cubic(y - y0)
        xi0, yi0 = x0.to(tl.int32), y0.to(tl.int32)
        i1w = tl.zeros([BLOCK], tl.float32)
        ixw = tl.zeros([BLOCK], tl.float32)
        iyw = tl.zeros([BLOCK], tl.float32)
        for j in tl.static_range(4):
            yj = yi0 + (j - 1)
            wy = _tap(wy0, wy1, wy2, wy3, j)
            rowj = tl.minimum(tl.maximum(yj, 0), height - 1) * width
            for i in tl.static_range(4):
                xi = xi0 + (i - 1)
                wx = _tap(wx0, wx1, wx2, wx3, i)
                w = wy * wx
                if not REPLICATE:
                    w = tl.where((yj >= 0) & (yj < height) & (xi >= 0) & (xi < width), w, 0.0)
                idx = rowj + tl.minimum(tl.maximum(xi, 0), width - 1)
                i1w = i1w + tl.load(img + idx, mask=m, other=0.0) * w
                ixw = ixw + tl.load(img + hw + idx, mask=m, other=0.0) * w
                iyw = iyw + tl.load(img + 2 * hw + idx, mask=m, other=0.0) * w
        i0 = tl.load(img + 3 * hw + offs, mask=m, other=0.0)
        rho_c = i1w - ixw * u1 - iyw * u2 - i0
        if REPLICATE:  # no data term where x + u leaves the image (kernels.warp_data says why)
            outside = (x < 0.0) | (x > width - 1.0) | (y < 0.0) | (y > height - 1.0)
            ixw = tl.where(outside, 0.0, ixw)
            iyw = tl.where(outside, 0.0, iyw)
            rho_c = tl.where(outside, 0.0, rho_c)
        out = out_ptr + n * 3 * hw
        tl.store(out + offs, ixw, mask=m)
        tl.store(out + hw + offs, iyw, mask=m)
        tl.store(out + 2 * hw + offs, rho_c, mask=m)

    @triton.jit
    def _primal_kernel(u_ptr, p_ptr, data_ptr, prev_ptr, next_ptr, steps_ptr, tiles, stop, l_t, theta,
                       width, hw, BLOCK: tl.constexpr, TILES_P2: tl.constexpr):
        """Thresholding + primal step of kernels.primal_dual_steps; writes this tile's squared update."""
        n = tl.program_id(0)
        tile = tl.program_id(1)
        if _active(prev_ptr, n, tiles, stop, TILES_P2):
            n64 = n.to(tl.int64)
            offs, m, col, row = _tile(tile, hw, width, BLOCK)
            u, p, d = u_ptr + n64 * 2 * hw, p_ptr + n64 * 4 * hw, data_ptr + n64 * 3 * hw
            u1 = tl.load(u + offs, mask=m, other=0.0)
            u2 = tl.load(u + hw + offs, mask=m, other=0.0)
            ix = tl.load(d + offs, mask=m, other=0.0)
            iy = tl.load(d + hw + offs, mask=m, other=0.0)
            rho_c = tl.load(d + 2 * hw + offs, mask=m, other=0.0)
            grad = ix * ix + iy * iy
            l_grad = l_t * grad
            rho = rho_c + (ix * u1 + iy * u2)
            fi = tl.where(rho < -l_grad, l_t, tl.where(rho > l_grad, -l_t,
                                                       tl.where(grad > 1.1920928955078125e-07, -rho / grad, 0.0)))
            left, up = m & (col > 0), m & (row > 0)
            p1x = tl.load(p + offs, mask=m, other=0.0)
            p2x = tl.load(p + hw + offs, mask=m, other=0.0)
            p1y = tl.load(p + 2 * hw + offs, mask=m, other=0.0)
            p2y = tl.load(p + 3 * hw + offs, mask=m, other=0.0)
            div1 = p1x - tl.load(p + offs - 1, mask=left, other=0.0) + p1y - tl.load(p + 2 * hw + offs - width, mask=up, other=0.0)
            div2 = p2x - tl.load(p + hw + offs - 1, mask=left, other=0.0) + p2y - tl.load(p + 3 * hw + offs - width, mask=up, other=0.0)
            n1 = u1 + fi * ix + theta * div1
            n2 = u2 + fi * iy + theta * div2
            tl.store(u + offs, n1, mask=m)
            tl.store(u + hw + offs, n2, mask=m)
            e = tl.where(m, (n1 - u1) * (n1 - u1) + (n2 - u2) * (n2 - u2), 0.0)
            tl.store(next_ptr + n * tiles + tile, tl.sum(e, 0))
            if tile == 0:
                tl.store(steps_ptr + n, tl.load(steps_ptr + n) + 1)
        else:
            tl.store(next_ptr + n * tiles + tile, 0.0)

    @triton.jit
    def _dual_kernel(u_ptr, p_ptr, prev_ptr, tiles, stop, taut, height, width, hw,
                     BLOCK: tl.constexpr, TILES_P2: tl.constexpr):
        """Dual step p = (p + tau/theta grad u) / (1 + tau/theta |grad u|) on the new u."""
        n = tl.program_id(0)
        if _active(prev_ptr, n, tiles, stop, TILES_P2):
            n64 = n.to(tl.int64)
            offs, m, col, row = _tile(tl.program_id(1), hw, width, BLOCK)
            u, p = u_ptr + n64 * 2 * hw, p_ptr + n64 * 4 * hw
            right, down = m & (col < width - 1), m & (row < height - 1)
            u1 = tl.load(u + offs, mask=m, other=0.0)
            u2 = tl.load(u + hw + offs, mask=m, other=0.0)
            u1x = tl.where(right, tl.load(u + offs + 1, mask=right, other=0.0) - u1, 0.0)
            u2x = tl.where(right, tl.load(u + hw + offs + 1, mask=right, other=0.0) - u2, 0.0)
            u1y = tl.where(down, tl.load(u + offs + width, mask=down, other=0.0) - u1, 0.0)
            u2y = tl.where(down, tl.load(u + hw + offs + width, mask=down, other=0.0) - u2, 0.0)
            norm1 = 1.0 + taut * tl.sqrt(u1x * u1x + u1y * u1y)
            norm2 = 1.0 + taut * tl.sqrt(u2x * u2x + u2y * u2y)
            p1x = tl.load(p + offs, mask=m, other=0.0)
            p2x = tl.load(p + hw + offs, mask=m, other=0.0)
            p1y = tl.load(p + 2 * hw + offs, mask=m, other=0.0)
            p2y = tl.load(p + 3 * hw + offs, mask=m, other=0.0)
            tl.store(p + offs, (p1x + taut * u1x) / norm1, mask=m)
            tl.store(p + hw + offs, (p2x + taut * u2x) / norm2, mask=m)
            tl.store(p + 2 * hw + offs, (p1y + taut * u1y) / norm1, mask=m)
            tl.store(p + 3 * hw + offs, (p2y + taut * u2y) / norm2, mask=m)

    @triton.jit
    def _median_kernel(u_ptr, out_ptr, prev_ptr, tiles, stop, height, width, hw,
                       SIZE: tl.constexpr, BLOCK: tl.constexpr, TILES_P2: tl.constexpr):
        """SIZE x SIZE median of both flow channels (replicated border) for pairs still moving."""
        n = tl.program_id(0)
        if _active(prev_ptr, n, tiles, stop, TILES_P2):
            n64 = n.to(tl.int64)
            offs, m, col, row = _tile(tl.program_id(1), hw, width, BLOCK)
            for c in tl.static_range(2):
                base = u_ptr + (n64 * 2 + c) * hw
                if SIZE == 3:
                    med = median3(base, m, row, col, height, width)
                else:
                    med = median5(base, m, row, col, height, width)
                tl.store(out_ptr + (n64 * 2 + c) * hw + offs, med, mask=m)

    @triton.jit
    def _copy_active_kernel(src_ptr, dst_ptr, prev_ptr, tiles, stop, size, BLOCK: tl.constexpr,
                            TILES_P2: tl.constexpr):
        n = tl.program_id(0)
        if _active(prev_ptr, n, tiles, stop, TILES_P2):
            offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
            m = offs < size
            base = n.to(tl.int64) * size
            tl.store(dst_ptr + base + offs, tl.load(src_ptr + base + offs, mask=m), mask=m)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _p2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _f32(x: float) -> float:
    """The float32 value the generic solver computes with (its constants live in a float32 tensor)."""
    return float(torch.tensor(x, dtype=torch.float32))


class _Level:
    """Buffers and (once seen twice) the CUDA graph of one (batch, height, width)."""

    def __init__(self, n: int, height: int, width: int, device: torch.device):
        hw = height * width
        self.shape = (n, height, width)
        self.tiles = _cdiv(hw, PRIMAL_BLOCK)
        empty = dict(device=device, dtype=torch.float32)
        self.images = torch.zeros(n, 4, height, width, **empty)  # I1, I1x, I1y, I0
        self.u = torch.zeros(n, 2, height, width, **empty)
        self.median = torch.zeros(n, 2, height, width, **empty)
        self.p = torch.zeros(n, 4, height, width, **empty)
        self.data = torch.zeros(n, 3, height, width, **empty)
        self.parts = torch.zeros(2, n, self.tiles, **empty)  # per-tile squared updates, by step parity
        self.steps = torch.zeros(n, device=device, dtype=torch.int32)  # primal-dual steps run per pair
        self.runs = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.nbytes = sum(t.numel() * t.element_size() for t in (self.images, self.u, self.median, self.p, self.data))


class TritonLevelSolver:
    """Solves one pyramid level for a batch: `solve(images, u) -> u` (see TVL1Flow._solve_level).

    `graphs`: capture a level's launches in a CUDA graph the second time its shape is seen (the
    first run compiles the kernels and serves shapes that never come back).
    """

    _capture_lock = threading.Lock()

    def __init__(self, params, device: torch.device, *, graphs: bool = True):
        self.params = params
        self.device = device
        self.graphs = graphs and device.type == "cuda" and not interpreted()
        self.graph_error: str | None = None
        self._levels: OrderedDict[tuple[int, int, int], _Level] = OrderedDict()
        self.pixel_steps = torch.zeros((), device=device, dtype=torch.int64)
        c = params
        self._l_t = _f32(c.lambda_ * c.theta)
        self._theta = _f32(c.theta)
        self._taut = _f32(c.tau / c.theta)
        self._eps2 = float(torch.tensor(c.epsilon, dtype=torch.float32) ** 2)

    def solve(self, images: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        level = self._level(n, height, width)
        level.images.copy_(images)
        level.u.copy_(u)
        if self.graphs and level.graph is None and level.runs >= 1 and self.graph_error is None:
            self._capture(level)
        if level.graph is not None:
            level.graph.replay()
        else:
            self._launch(level)
        level.runs += 1
        self.pixel_steps += level.steps.sum() * (height * width)
        return level.u.clone()

    def _level(self, n: int, height: int, width: int) -> _Level:
        key = (n, height, width)
        level = self._levels.get(key)
        if level is None:
            level = self._levels[key] = _Level(n, height, width, self.device)
            while len(self._levels) > 1 and sum(lv.nbytes for lv in self._levels.values()) > MAX_CACHED_BYTES:
                self._levels.popitem(last=False)
        self._levels.move_to_end(key)
        return level

    def _capture(self, level: _Level) -> None:
        try:
            graph = torch.cuda.CUDAGraph()
            with self._capture_lock, torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._launch(level)
            level.graph = graph
        except Exception as exc:  # capture unsupported here: plain launches still work
            self.graph_error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"TV-L1: CUDA graph capture failed ({self.graph_error}); launching kernels one by one",
                          RuntimeWarning, stacklevel=3)

    def _launch(self, lv: _Level) -> None:
        """The level's whole schedule; no host synchronisation inside (graph-capturable)."""
        cfg = self.params
        n, height, width = lv.shape
        hw = height * width
        stop = _f32(self._eps2 * hw)
        tiles, tiles_p2 = lv.tiles, _p2(lv.tiles)
        grid = (n, tiles)
        median_grid = (n, _cdiv(hw, MEDIAN_BLOCK))
        median = cfg.median_filtering if cfg.median_filtering > 1 else 0
        lv.p.zero_()
        lv.steps.zero_()
        step = 0
        for _ in range(cfg.warps):
            _warp_kernel[grid](lv.images, lv.u, lv.data, height, width, hw,
                               REPLICATE=cfg.border == "replicate", BLOCK=PRIMAL_BLOCK)
            lv.parts[(step - 1) % 2].fill_(float("inf"))  # every pair starts the warp moving
            for _ in range(cfg.outer_iterations):
                prev = lv.parts[(step - 1) % 2]
                if median:
                    _median_kernel[median_grid](lv.u, lv.median, prev, tiles, stop, height, width, hw,
                                                SIZE=median, BLOCK=MEDIAN_BLOCK, TILES_P2=tiles_p2)
                    _copy_active_kernel[(n, _cdiv(2 * hw, PRIMAL_BLOCK))](
                        lv.median, lv.u, prev, tiles, stop, 2 * hw, BLOCK=PRIMAL_BLOCK, TILES_P2=tiles_p2)
                for _ in range(cfg.inner_iterations):
                    prev, nxt = lv.parts[(step - 1) % 2], lv.parts[step % 2]
                    _primal_kernel[grid](lv.u, lv.p, lv.data, prev, nxt, lv.steps, tiles, stop, self._l_t,
                                         self._theta, width, hw, BLOCK=PRIMAL_BLOCK, TILES_P2=tiles_p2)
                    _dual_kernel[grid](lv.u, lv.p, prev, tiles, stop, self._taut, height, width, hw,
                                       BLOCK=PRIMAL_BLOCK, TILES_P2=tiles_p2)
                    step += 1
