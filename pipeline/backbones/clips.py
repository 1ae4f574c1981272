"""Sliding windows for video backbones: one clip per window, one feature per clip.

Windows start every `stride` frames; when the last regular window stops short of the end, one more
window is aligned to the last frame so the tail is covered (its spacing to the previous one is then
smaller than `stride`, which is why every window records its centre frame). A video shorter than
the window gives one window that repeats its last frame.
"""

from __future__ import annotations

import torch

from pipeline.errors import BackboneError


def clip_index(num_frames: int, *, window: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame indices `(W, window)` of every clip and each clip's centre frame `(W,)`.

    The centre is `(first + last) // 2` of the frames the clip really holds, so for a 16-frame
    window starting at s it is s + 7, and for a short video of T frames it is (T - 1) // 2.
    """
    if num_frames < 1:
        raise BackboneError(f"a video needs at least one frame for clips, got {num_frames}")
    if window < 1 or stride < 1:
        raise BackboneError(f"clip window and stride must be >= 1, got {window} and {stride}")
    last_start = max(num_frames - window, 0)
    starts = torch.arange(0, last_start + 1, stride)
    if int(starts[-1]) != last_start:
        starts = torch.cat([starts, torch.tensor([last_start])])
    index = (starts[:, None] + torch.arange(window)).clamp_(max=num_frames - 1)
    centres = (index[:, 0] + index[:, -1]) // 2
    return index, centres
