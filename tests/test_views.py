"""Views: shapes, view 0 = torchvision's centre crop, flips flip, corners are corners."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import functional as TF

from pipeline.errors import ConfigError, RegistryError
from pipeline.views import VIEWS, make_views, num_views, view_flips, view_names

SIZE = 6


@pytest.fixture
def frames() -> torch.Tensor:
    # distinct values everywhere so that any wrong offset shows
    return torch.arange(2 * 3 * 9 * 13, dtype=torch.float32).view(2, 3, 9, 13)


@pytest.mark.parametrize(
    "scheme,count", [("center", 1), ("flip", 2), ("multi3", 3), ("multi5", 5), ("multi10", 10)]
)
def test_shapes_and_centre_first(frames, scheme, count):
    views = make_views(frames, views=scheme, size=SIZE)
    assert views.shape == (count, 2, 3, SIZE, SIZE)
    assert num_views(scheme) == count == len(view_names(scheme)) == len(view_flips(scheme))
    assert torch.equal(views[0], TF.center_crop(frames, [SIZE]))
    assert view_names(scheme)[0] == "center"


def test_flip_really_flips(frames):
    views = make_views(frames, views="flip", size=SIZE)
    assert torch.equal(views[1], views[0].flip(-1))
    assert torch.equal(views[1][..., 0], views[0][..., -1])
    assert view_flips("flip") == [False, True]


def test_multi5_corners_are_corners(frames):
    views = make_views(frames, views="multi5", size=SIZE)
    s = SIZE
    assert torch.equal(views[1], frames[..., :s, :s])
    assert torch.equal(views[2], frames[..., :s, -s:])
    assert torch.equal(views[3], frames[..., -s:, :s])
    assert torch.equal(views[4], frames[..., -s:, -s:])
    assert view_names("multi5") == ["center", "top_left", "top_right", "bottom_left", "bottom_right"]


def test_multi10_is_multi5_then_flipped(frames):
    ten = make_views(frames, views="multi10", size=SIZE)
    five = make_views(frames, views="multi5", size=SIZE)
    assert torch.equal(ten[:5], five)
    assert torch.equal(ten[5:], five.flip(-1))
    assert view_flips("multi10") == [False] * 5 + [True] * 5


def test_multi3_slides_along_the_long_side(frames):
    landscape = make_views(frames, views="multi3", size=SIZE)  # 9 x 13
    top = int(round((9 - SIZE) / 2))
    assert torch.equal(landscape[1], frames[..., top : top + SIZE, :SIZE])
    assert torch.equal(landscape[2], frames[..., top : top + SIZE, -SIZE:])
    portrait = frames.transpose(-1, -2).contiguous()  # 13 x 9
    views = make_views(portrait, views="multi3", size=SIZE)
    left = int(round((9 - SIZE) / 2))
    assert torch.equal(views[1], portrait[..., :SIZE, left : left + SIZE])
    assert torch.equal(views[2], portrait[..., -SIZE:, left : left + SIZE])


def test_uint8_in_uint8_out_and_exact_fit():
    frames = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8)
    views = make_views(frames, views="multi10", size=SIZE)
    assert views.dtype == torch.uint8
    assert all(torch.equal(views[v], frames) for v in range(5))  # every crop is the whole frame


def test_bad_input():
    with pytest.raises(ConfigError, match="at least 6x6"):
        make_views(torch.zeros(1, 3, 5, 9), views="center", size=SIZE)
    with pytest.raises(ConfigError, match=r"\(N, C, H, W\)"):
        make_views(torch.zeros(3, 9, 9), views="center", size=SIZE)
    with pytest.raises(RegistryError, match="known: center, flip, multi10, multi3, multi5"):
        make_views(torch.zeros(1, 3, 9, 9), views="multi7", size=SIZE)
    assert sorted(VIEWS.names()) == ["center", "flip", "multi10", "multi3", "multi5"]
