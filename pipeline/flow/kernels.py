"""The hot loops of TV-L1, written as plain tensor code that `torch.compile` fuses.

Everything here is batched over pairs (dim 0) and works unchanged on CPU (inductor's C++/OpenMP
backend) and CUDA (Triton). Each function is compiled once with dynamic shapes, so pyramid levels
and shrinking batches (pairs drop out when they converge) reuse the same kernels; without a working
compiler the eager version runs instead, after one warning.

Numerics follow OpenCV's `DualTVL1OpticalFlow` (itself Sánchez Pérez et al., IPOL 2013): forward
differences for the flow gradient, backward differences with zero boundary for the divergence, the
three-case thresholding step of Zach et al. (2007), bicubic warping with zeros outside the image.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.fx.experimental._config
import torch.nn.functional as F

FLT_EPSILON = 1.1920928955078125e-07  # OpenCV guards |grad I|^2 with FLT_EPSILON


# ---- one primal-dual step, repeated `steps` times ----------------------------------------------


def _back_x(t: torch.Tensor) -> torch.Tensor:
    """t[..., x - 1] with 0 at x = 0."""
    return F.pad(t[..., :-1], (1, 0))


def _back_y(t: torch.Tensor) -> torch.Tensor:
    return F.pad(t[..., :-1, :], (0, 0, 1, 0))


def _forward_dx(t: torch.Tensor) -> torch.Tensor:
    return F.pad(t[..., 1:] - t[..., :-1], (0, 1))


def _forward_dy(t: torch.Tensor) -> torch.Tensor:
    return F.pad(t[..., 1:, :] - t[..., :-1, :], (0, 0, 0, 1))


def primal_dual_steps(
    u: torch.Tensor, p: torch.Tensor, data: torch.Tensor, active: torch.Tensor, consts: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`steps` inner iterations of TV-L1 for a batch of pairs at one scale and warp.

    u (N, 2, H, W) flow; p (N, 4, H, W) dual variables (p1x, p2x, p1y, p2y); data (N, 3, H, W)
    holds I1wx, I1wy and rho_c = I1w - I1wx*u0x - I1wy*u0y - I0 from the warp; active (N,) bool;
    consts = [lambda*theta, theta, tau/theta, epsilon]. A pair whose squared update falls to
    epsilon^2 * H * W stops exactly at that iteration, as in OpenCV (it stays frozen until the
    caller drops it from the batch). Returns (u, p, active).

    Written channel-vectorised with the dual variables split in x and y parts: this is the form
    inductor fuses into four loops per step (rho, u, the stopping sum, p), about 3.5 ns per pixel
    and step on one CPU core against 5-7 ns for per-component code.
    """
    l_t, theta, taut, eps = consts[0], consts[1], consts[2], consts[3]
    stop = eps * eps * (u.shape[-1] * u.shape[-2])
    ixy, rho_c = data[:, 0:2], data[:, 2:3]
    grad = (ixy * ixy).sum(1, keepdim=True)
    l_grad = l_t * grad
    px, py = p[:, 0:2], p[:, 2:4]
    for _ in range(steps):
        a = active[:, None, None, None]
        # thresholding step of Zach et al.: v = u + fi * grad(I1w)
        rho = rho_c + (ixy * u).sum(1, keepdim=True)
        fi = torch.where(
            rho < -l_grad, l_t, torch.where(rho > l_grad, -l_t, torch.where(grad > FLT_EPSILON, -rho / grad, 0.0))
        )
        # primal step u = v + theta * div p, kept only for pairs still running
        new = torch.where(a, u + fi * ixy + theta * (px - _back_x(px) + py - _back_y(py)), u)
        err = ((new - u) ** 2).sum((1, 2, 3))
        u = new
        # dual step p = (p + tau/theta grad u) / (1 + tau/theta |grad u|)
        ux, uy = _forward_dx(u), _forward_dy(u)
        norm = 1.0 + taut * torch.sqrt(ux * ux + uy * uy)
        px = torch.where(a, (px + taut * ux) / norm, px)
        py = torch.where(a, (py + taut * uy) / norm, py)
        active = active & (err > stop)
    return u, torch.cat([px, py], 1), active


# ---- median filter as a selection network ------------------------------------------------------


def median_network(n: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """Compare-exchange steps that leave the median of n values at index n // 2.

    Batcher's odd-even merge sort (padded to a power of two; comparators touching the padding are
    no-ops when it holds +inf), pruned backwards to what the median needs. Each step is
    (lo, hi, keep_min, keep_max). For n = 25 (5x5): 113 compare-exchanges, 202 min/max operations,
    branch-free, so the compiler vectorises them; a sort per pixel would not.
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed, steps = {n // 2}, []
    for lo, hi in reversed(pairs):
        keep_min, keep_max = lo in needed, hi in needed
        if keep_min or keep_max:
            steps.append((lo, hi, keep_min, keep_max))
            needed |= {lo, hi}
    return tuple(reversed(steps))


def median_filter(u: torch.Tensor, size: int, *, compiled: bool = False) -> torch.Tensor:
    """size x size median of each channel of (N, C, H, W), replicated border (as cv::medianBlur).

    The border is padded here, outside the compiled part: with the padding inside, inductor turns
    every window read into clamped indices and the kernel runs 3.6x slower.
    """
    r = size // 2
    return median_padded_compiled(F.pad(u, (r, r, r, r), mode="replicate"), size, compiled=compiled)


def median_padded(padded: torch.Tensor, size: int) -> torch.Tensor:
    r = size // 2
    height, width = padded.shape[-2] - 2 * r, padded.shape[-1] - 2 * r
    vals = [padded[..., dy : dy + height, dx : dx + width] for dy in range(size) for dx in range(size)]
    for lo, hi, keep_min, keep_max in median_network(size * size):
        a, b = vals[lo], vals[hi]
        if keep_min:
            vals[lo] = torch.minimum(a, b)
        if keep_max:
            vals[hi] = torch.maximum(a, b)
    return vals[(size * size) // 2]


# ---- warping -----------------------------------------------------------------------------------


def centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of (N, H, W); half one-sided differences on the border, as OpenCV."""
    p = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    return 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]), 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])


def _cubic_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keys cubic convolution weights (a = -0.75, as cv::remap INTER_CUBIC) for taps -1, 0, 1, 2."""
    a = -0.75
    s = 1.0 - t
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * s - (a + 3)) * s * s + 1
    return w0, w1, w2, 1.0 - w0 - w1 - w2


def warp_data(images: torch.Tensor, u: torch.Tensor, replicate: bool = False) -> torch.Tensor:
    """Warp I1 and its gradient by u; return (N, 3, H, W): I1wx, I1wy, rho_c.

    images (N, 4, H, W) = I1, I1x, I1y, I0 (one fresh tensor per level, so the compiled function
    sees the same kind of input at every level); u (N, 2, H, W). Bicubic with zeros outside the
    image, as cv::remap(INTER_CUBIC, BORDER_CONSTANT), or with the border replicated (`replicate`,
    the Neumann condition of the IPOL code) and no data term where x + u falls outside the image
    (OpenCV's zeros give that beyond the bicubic support, but fake edges within it). Written as 16
    gathers rather than grid_sample so that integer positions are sampled exactly: grid_sample's
    [-1, 1] coordinates round, and with zeros outside, a 1e-5 px error on the border grows warp
    after warp (identical frames would not give zero flow).
    """
    target, i0 = images[:, :3], images[:, 3]
    n, c, height, width = target.shape
    x = (torch.arange(width, device=u.device, dtype=u.dtype) + u[:, 0]).clamp(-3.0, width + 2.0)
    y = (torch.arange(height, device=u.device, dtype=u.dtype)[:, None] + u[:, 1]).clamp(-3.0, height + 2.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = _cubic_weights(x - x0), _cubic_weights(y - y0)
    x0, y0 = x0.long(), y0.long()
    flat = target.reshape(n, c, height * width)
    warped = torch.zeros_like(target)
    for j in range(4):
        yj = y0 + (j - 1)
        inside_y = (yj >= 0) & (yj < height)
        row = yj.clamp(0, height - 1) * width
        for i in range(4):
            xi = x0 + (i - 1)
            index = (row + xi.clamp(0, width - 1)).reshape(n, 1, -1).expand(n, c, -1)
            weight = wy[j] * wx[i]
            if not replicate:
                weight = torch.where(inside_y & (xi >= 0) & (xi < width), weight, 0.0)
            weight = weight[:, None]
            warped = warped + flat.gather(2, index).reshape(n, c, height, width) * weight
    i1w, ix, iy = warped.unbind(1)
    rho_c = i1w - ix * u[:, 0] - iy * u[:, 1] - i0
    data = torch.stack([ix, iy, rho_c], 1)
    if replicate:
        # no data term where x + u leaves the image: a zero gradient makes the thresholding step
        # leave u alone, so the TV term fills the flow in from inside (the replicated border has
        # no information there, and its warped gradient would pull the flow wrongly)
        outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
        data = torch.where(outside[:, None], 0.0, data)
    return data


# ---- compile once, fall back to eager ----------------------------------------------------------


class Compiled:
    """`torch.compile(fn, dynamic=True)` on first use; eager `fn` (with one warning) if that fails.

    On CPU the graph is compiled with inductor's C++ wrapper, which runs the whole graph with the
    GIL released: stage one computes several videos' flow in threads at once, and with the default
    Python wrapper every kernel call holds the GIL (two threads ran no faster than one; with the
    C++ wrapper they run 1.7x as fast). CUDA keeps the default wrapper.

    Compiled code is cached in memory per process and on disk by inductor
    (TORCHINDUCTOR_CACHE_DIR), so only the first process on a machine pays the full compile cost.
    Whether a run compiles at all is decided per run from its size (`compile_policy.choose`: a
    small one finishes sooner eager), and stage one compiles once per node before its workers start
    (`compile_policy.warm_up`). STPIPE_FLOW_COMPILE=0 forces eager everywhere.
    """

    def __init__(self, fn: Callable[..., Any], **options: Any):
        self.fn = fn
        self.options = options
        self._compiled: dict[str, Callable[..., Any]] = {}  # by device type
        self.failed: str | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, compiled: bool = True) -> Any:
        if not compiled or self.failed is not None or os.environ.get("STPIPE_FLOW_COMPILE", "1") == "0":
            return self.fn(*args)
        device = args[0].device.type
        fn = self._compiled.get(device)
        if fn is None:
            _announce_compile()
            options = {**self.options, "cpp_wrapper": True} if device == "cpu" else self.options
            fn = self._compiled[device] = torch.compile(self.fn, dynamic=True, options=options or None)
        try:
            # no "duck" shapes: equal sizes by chance (batch 2 = 2 flow channels) must not become guards
            with torch.fx.experimental._config.patch(use_duck_shape=False):
                return fn(*args)
        except Exception as exc:  # no C++ compiler, unsupported backend, ...: eager still works
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(
                f"torch.compile failed for TV-L1 ({self.failed}); running eager, about 4x slower",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.fn(*args)


_announced = False


def _announce_compile() -> None:
    """Say once per process why the first flow call takes long (a silent 0% bar for minutes looks
    like a hang), and drop torch's "No CUDA runtime is found" line, which is noise on a CPU host."""
    global _announced
    if not _announced:
        _announced = True
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        # a log record, not a print: pipeline/ never writes to the terminal; with no handler configured,
        # logging's last resort still shows a warning on stderr
        logging.getLogger("stpipe").warning(
            "stpipe: compiling the TV-L1 kernels (torch.compile): 1-3 min the first time on a machine, "
            "seconds once inductor's disk cache holds them; STPIPE_FLOW_COMPILE=0 runs eager instead")


primal_dual_compiled = Compiled(primal_dual_steps)
# The median network is one long chain of min/max per pixel: keep it in one loop (registers)
# instead of letting inductor spill intermediate windows to memory (3x faster).
_INLINE = {k: 1_000_000 for k in ("realize_opcount_threshold", "realize_reads_threshold", "realize_acc_reads_threshold")}
median_padded_compiled = Compiled(median_padded, **_INLINE)
warp_compiled = Compiled(warp_data, **_INLINE)
