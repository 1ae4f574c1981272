"""TSN's training augmentation: multi-scale "corner" cropping, optional horizontal flip.

TSN's `GroupMultiScaleCrop`: on frames whose shorter side is the backbone's resize size, the crop
side is drawn from `scales` x the shorter side (a size within 3 px of the input size snaps to it),
width and height independently but at most `max_distort` scale steps apart (aspect jitter); the
crop sits at one of 13 fixed positions (centre, 4 corners, 4 edge middles, 4 quarter points) and is
resized to the input size. One box per clip: every segment of a video gets the same crop, and
so does its motion stream, so appearance and motion stay spatially registered (ST-ResNet adds
their feature maps pixel by pixel). A flip mirrors both; a mirrored flow field also negates its x
displacements. Flow displacements are rescaled with the crop's zoom (x by out/width, y by
out/height), the convention `FlowPreprocess` already uses for resizing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class CropBox:
    """A crop of a (height, width) frame: pixels [top, top + h) x [left, left + w), then mirrored or not."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    frame: tuple[int, int]  # (height, width) of the frame the box was drawn on

    def on(self, height: int, width: int) -> CropBox:
        """The same relative box on a frame of another size (the flow fields' resolution)."""
        if (height, width) == self.frame:
            return self
        fy, fx = height / self.frame[0], width / self.frame[1]
        h, w = max(1, round(self.height * fy)), max(1, round(self.width * fx))
        top, left = min(round(self.top * fy), height - h), min(round(self.left * fx), width - w)
        return CropBox(top, left, h, w, self.flip, (height, width))


def fixed_offsets(height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
    """TSN's 13 crop positions (`fill_fix_offset` with more_fix_crop) as (top, left)."""
    h, w = (height - crop_h) // 4, (width - crop_w) // 4
    quarters = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2),  # corners and centre
                (2, 0), (2, 4), (4, 2), (0, 2),  # edge middles
                (1, 1), (1, 3), (3, 1), (3, 3)]  # fmt: skip
    return [(qy * h, qx * w) for qy, qx in quarters]


def multiscale_box(
    height: int,
    width: int,
    *,
    size: int,
    scales: tuple[float, ...],
    max_distort: int,
    flip: bool,
    rng: np.random.Generator,
) -> CropBox:
    """Draw one TSN multi-scale corner crop of a (height, width) frame for an output of `size`."""
    base = min(height, width)
    sides = [size if abs(int(base * s) - size) < 3 else int(base * s) for s in scales]
    pairs = [(ch, cw) for i, ch in enumerate(sides) for j, cw in enumerate(sides) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[rng.integers(len(pairs))]
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    offsets = fixed_offsets(height, width, crop_h, crop_w)
    top, left = offsets[rng.integers(len(offsets))]
    mirrored = bool(flip and rng.random() < 0.5)
    return CropBox(int(top), int(left), int(crop_h), int(crop_w), mirrored, (height, width))


def crop_frames(x: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 or float -> the box resized to (size, size), mirrored when the box says so."""
    box = box.on(*x.shape[-2:])
    out = x[..., box.top : box.top + box.height, box.left : box.left + box.width]
    out = TF.resize(out, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return out.flip(-1) if box.flip else out


def crop_flow(x: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """(N, 2L, H, W) float displacements in pixels -> cropped, resized, rescaled and mirrored ones."""
    box = box.on(*x.shape[-2:])
    out = crop_frames(x, box, size)
    scale = torch.tensor([size / box.width, size / box.height], dtype=out.dtype)
    out = out * scale.repeat(out.shape[1] // 2).view(-1, 1, 1)
    if box.flip:
        out[:, 0::2] *= -1  # a mirrored field moves the other way along x
    return out
