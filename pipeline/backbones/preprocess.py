"""Batched preprocessing: decoded frames (or flow fields) -> the network's input, on any device.

RGB follows the weights' own transforms (torchvision's `ImageClassification` /
`VideoClassification`): resize (shorter side, or an exact (h, w) for the video weights), centre
crop, scale to [0, 1], normalise by mean/std. The resize uses torchvision's v2 kernel, which works
on the uint8 batch directly (channels-last, the decoders' layout): ~25x faster on CPU than the v1
path the weights' transforms take (which resizes in float32 and rounds back), and equal to it
within one uint8 level (about an eighth of the pixels differ by 1/255 through rounding).

Flow (the motion stream's input) is documented in `FlowPreprocess`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from pipeline.errors import BackboneError, FlowError
from pipeline.views import make_views, view_flips


def _as_nchw(frames: torch.Tensor | np.ndarray, channels: int) -> torch.Tensor:
    """Accept (N, H, W, C) (what decoders give) or (N, C, H, W); return an (N, C, H, W) view."""
    x = torch.as_tensor(frames)
    if x.ndim != 4:
        raise BackboneError(
            f"frames must be (N, H, W, {channels}) or (N, {channels}, H, W), got {tuple(x.shape)}"
        )
    if x.shape[1] != channels and x.shape[-1] == channels:
        x = x.permute(0, 3, 1, 2)  # channels-last view, no copy: the uint8 resize is fastest on it
    if x.shape[1] != channels:
        raise BackboneError(f"frames must have {channels} channels, got shape {tuple(x.shape)}")
    return x


class ImagePreprocess:
    """uint8 frames -> normalised float crops, the weights' transforms done on a whole batch."""

    def __init__(
        self,
        *,
        resize_size: list[int],
        crop_size: int,
        mean: list[float],
        std: list[float],
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        antialias: bool = True,
    ):
        self.resize_size, self.crop_size = list(resize_size), int(crop_size)
        self.mean, self.std = list(mean), list(std)
        self.interpolation, self.antialias = interpolation, antialias
        self.channels = len(self.mean)
        # (x / 255 - mean) / std as one multiply-add per element
        self._scale = torch.tensor([1.0 / s for s in self.std]).view(-1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)]).view(-1, 1, 1)
        # per device, made once: a host-to-GPU copy per batch would wait for the GPU (a sync per batch)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def resize(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = _as_nchw(frames, self.channels)
        return TF.resize(x, self.resize_size, interpolation=self.interpolation, antialias=self.antialias)

    def normalize(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(..., C, h, w) uint8 or [0, 1] float -> normalised float32 (written into `out` when given)."""
        constants = self._constants.get(x.device)
        if constants is None:
            scale, shift = self._scale.to(x.device), self._shift.to(x.device)
            constants = self._constants[x.device] = (scale, scale / 255.0, shift)
        scale, scale_uint8, shift = constants
        factor = scale_uint8 if x.dtype == torch.uint8 else scale
        if x.device.type != "cpu":
            return torch.addcmul(shift, x if out is not None else x.float(), factor, out=out)
        # on a CPU, a cast then one `shift + factor * x` per channel: addcmul's result to the bit (both
        # round once; tested at every ATen CPU capability), 4x faster than addcmul's broadcasting kernel,
        # which took the decoders' cores (benchmarks/README.md, "a 4x cheaper CPU normalisation")
        out = torch.empty(x.shape, dtype=torch.float32) if out is None else out
        out.copy_(x)
        for c, channel in enumerate(out.unbind(-3)):
            torch.add(shift[c], channel, alpha=factor[c].item(), out=channel)
        return out

    def __call__(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.normalize(TF.center_crop(self.resize(frames), [self.crop_size]))

    def views(self, frames: torch.Tensor | np.ndarray, *, views: str = "center") -> torch.Tensor:
        return self.normalize(make_views(self.resize(frames), views=views, size=self.crop_size))

    def meta(self) -> dict[str, Any]:
        return {
            "modality": "rgb",
            "input_size": [self.crop_size, self.crop_size],
            "resize_size": self.resize_size,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation.value,
            "antialias": self.antialias,
        }


class FlowPreprocess:
    """Stacked flow fields `(N, 2L, H, W)` -> motion-stream input `(N, 2L, crop, crop)`.

    Convention (documented choice): displacements in pixels at the flow resolution are resized with
    the frames (shorter side to `resize_size`, the x and y displacements scaled by the same factors
    as the image axes), centre-cropped or cut into views like the RGB frames, clipped at
    +-`bound` pixels (20, as in ST-ResNet and TSN) and divided by `bound`, so the input lies in
    [-1, 1] with 0 = no motion. uint8 input is taken as the two-stream quantisation
    q = round((clip(f, -bound, bound) + bound) * 255 / (2 * bound)) (`pipeline.flow.quantize_flow`)
    and dequantised first.
    Channels are interleaved x1, y1, x2, y2, ... as TSN stacks them (see `stack_flow`).
    """

    def __init__(self, *, resize_size: list[int], crop_size: int, stack: int, bound: float = 20.0):
        self.resize_size, self.crop_size = list(resize_size), int(crop_size)
        self.stack, self.bound = int(stack), float(bound)
        self.channels = 2 * self.stack

    def dequantize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x.float() * (2.0 * self.bound / 255.0) - self.bound
        return x.float()

    def resize(self, flow: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = self.dequantize(_as_nchw(flow, self.channels))
        height, width = x.shape[-2:]
        x = TF.resize(x, self.resize_size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        new_height, new_width = x.shape[-2:]
        if (new_height, new_width) != (height, width):  # a displacement scales with its axis
            factors = torch.tensor([new_width / width, new_height / height], device=x.device)
            x = x * factors.repeat(self.stack).view(-1, 1, 1)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-self.bound, self.bound) / self.bound

    def __call__(self, flow: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.normalize(TF.center_crop(self.resize(flow), [self.crop_size]))

    def views(self, flow: torch.Tensor | np.ndarray, *, views: str = "center") -> torch.Tensor:
        out = make_views(self.resize(flow), views=views, size=self.crop_size)
        for v, flipped in enumerate(view_flips(views)):
            if flipped:  # a left-right flip of a flow field also negates its x displacements
                out[v, :, 0::2] *= -1
        return self.normalize(out)

    def meta(self) -> dict[str, Any]:
        return {
            "modality": "flow",
            "input_size": [self.crop_size, self.crop_size],
            "resize_size": self.resize_size,
            "mean": None,
            "std": None,
            "interpolation": InterpolationMode.BILINEAR.value,
            "antialias": True,
            "flow_stack": self.stack,
            "flow_bound": self.bound,
            "flow_scaling": "clip(flow_px, -bound, bound) / bound -> [-1, 1]",
            "flow_uint8": "q = round((clip(f, -bound, bound) + bound) * 255 / (2 * bound))",
            "flow_channels": "x1, y1, ..., xL, yL; stack centred on the frame",
        }


def stack_flow(fields: torch.Tensor, frames: torch.Tensor, *, stack: int) -> torch.Tensor:
    """Gather the flow stacks of some frames: fields `(F, 2, H, W)` -> `(len(frames), 2L, H, W)`.

    Frame t gets the L fields centred on it, t - L//2 .. t - L//2 + L - 1 (field t is the motion
    from frame t to t+1), clamped at both ends of the video. Works on uint8 or float fields.
    """
    if fields.ndim != 4 or fields.shape[1] != 2:
        raise FlowError(f"flow fields must be (F, 2, H, W), got {tuple(fields.shape)}")
    if fields.shape[0] == 0:
        raise FlowError("a flow stack needs at least one flow field (a video of two or more frames)")
    offsets = torch.arange(stack, device=fields.device) - stack // 2
    index = (frames.to(fields.device)[:, None] + offsets).clamp_(0, fields.shape[0] - 1)
    return fields[index].flatten(1, 2)
