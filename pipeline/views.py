"""Views: the crops stage one stores along the `view` axis of a video's features.

Stage two samples one view per epoch as augmentation (and averages views at test time) without
touching pixels again. Every scheme puts the plain centre crop at view 0, so "view 0" always means
the standard single-crop evaluation input.

    center   1 view : centre
    flip     2 views: centre, centre flipped left-right
    multi3   3 views: centre, then the two ends of the long side (centred on the short side)
    multi5   5 views: centre, top-left, top-right, bottom-left, bottom-right (TSN's corner crops)
    multi10 10 views: the 5 of multi5, then the same 5 flipped

Frames come in already resized (shorter side = the backbone's resize size); cropping is slicing
and flipping is one `flip` per view, so the cost is a handful of batched copies per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from pipeline.errors import ConfigError
from pipeline.registry import Registry

if TYPE_CHECKING:  # torch is not imported here: decoder processes crop with numpy and never load it
    import torch


class Crop(NamedTuple):
    name: str
    top: int
    left: int
    flip: bool = False


# A scheme maps (height, width, size) to its crops; registered functions, no if/elif on names.
VIEWS: Registry[Callable[[int, int, int], list[Crop]]] = Registry("views")


def _centre(height: int, width: int, size: int) -> Crop:
    # torchvision's center_crop rounding, so view 0 equals `F.center_crop` bit for bit
    return Crop("center", int(round((height - size) / 2.0)), int(round((width - size) / 2.0)))


def _corners(height: int, width: int, size: int) -> list[Crop]:
    bottom, right = height - size, width - size
    return [
        Crop("top_left", 0, 0),
        Crop("top_right", 0, right),
        Crop("bottom_left", bottom, 0),
        Crop("bottom_right", bottom, right),
    ]


def _flipped(crops: list[Crop]) -> list[Crop]:
    return [Crop(f"{c.name}_flip", c.top, c.left, True) for c in crops]


@VIEWS.register("center", num_views=1)
def center_views(height: int, width: int, size: int) -> list[Crop]:
    return [_centre(height, width, size)]


@VIEWS.register("flip", num_views=2)
def flip_views(height: int, width: int, size: int) -> list[Crop]:
    centre = [_centre(height, width, size)]
    return centre + _flipped(centre)


@VIEWS.register("multi3", num_views=3)
def multi3_views(height: int, width: int, size: int) -> list[Crop]:
    centre = _centre(height, width, size)
    if width >= height:  # landscape: slide along x
        return [centre, Crop("left", centre.top, 0), Crop("right", centre.top, width - size)]
    return [centre, Crop("top", 0, centre.left), Crop("bottom", height - size, centre.left)]


@VIEWS.register("multi5", num_views=5)
def multi5_views(height: int, width: int, size: int) -> list[Crop]:
    return [_centre(height, width, size)] + _corners(height, width, size)


@VIEWS.register("multi10", num_views=10)
def multi10_views(height: int, width: int, size: int) -> list[Crop]:
    five = multi5_views(height, width, size)
    return five + _flipped(five)


def view_names(views: str, *, height: int = 256, width: int = 256, size: int = 224) -> list[str]:
    """Names of the views of a scheme, in storage order (e.g. for the store's attrs)."""
    return [crop.name for crop in VIEWS.get(views)(height, width, size)]


def view_flips(views: str) -> list[bool]:
    """Which views of a scheme are flipped left-right (flow needs it to negate x)."""
    return [crop.flip for crop in VIEWS.get(views)(256, 256, 224)]


def num_views(views: str) -> int:
    return int(VIEWS.meta(views)["num_views"])


def make_views(frames: torch.Tensor, *, views: str = "center", size: int = 224) -> torch.Tensor:
    """Crop (and flip) a batch of resized frames into views.

    Args:
        frames: `(N, C, H, W)` with `H, W >= size` (any dtype, any device).
        views: a scheme name registered in `VIEWS`.
        size: side of the square crops.

    Returns:
        `(V, N, C, size, size)`, view 0 being the centre crop.
    """
    scheme = VIEWS.get(views)
    if frames.ndim != 4:
        raise ConfigError(f"views need frames shaped (N, C, H, W), got {tuple(frames.shape)}")
    height, width = frames.shape[-2:]
    if height < size or width < size:
        raise ConfigError(f"views need frames of at least {size}x{size}, got {height}x{width}")
    out = frames.new_empty((num_views(views), *frames.shape[:2], size, size))
    for v, crop in enumerate(scheme(height, width, size)):
        patch = frames[..., crop.top : crop.top + size, crop.left : crop.left + size]
        out[v] = patch.flip(-1) if crop.flip else patch
    return out
