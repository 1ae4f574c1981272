"""The flow stream's features: a flow backbone on stacks of L TV-L1 fields, as the fields arrive."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class FlowFeatures:
    """One video's flow-stream features: every frame whose stack of L fields is known, `step` frames
    a call. Keeps only the fields later stacks still need, so memory stays bounded on long videos;
    the calls are the same as on the whole video at its end."""

    def __init__(self, backbone, *, stack: int, views: str, step: int, device,
                 make_buffer: Callable[[int, tuple], object]):
        self.backbone, self.stack, self.views, self.step, self.device = backbone, stack, views, step, device
        self.make_buffer = make_buffer  # (views, dims) -> TimeBuffer for `flow_feat`
        self.fields: list[torch.Tensor] = []
        self.offset = 0  # index of the first field held in `fields`
        self.next_frame = 0  # next frame whose flow-stream features are due
        self.buffer = None

    def add(self, fields: np.ndarray) -> None:
        self.fields.append(torch.from_numpy(fields))

    def run(self, decoded: int, *, final: bool) -> None:
        from pipeline.backbones.preprocess import stack_flow

        if not self.fields:
            return
        fields = torch.cat(self.fields) if len(self.fields) > 1 else self.fields[0]
        stack, step = self.stack, self.step
        before, after = stack // 2, stack - 1 - stack // 2  # fields a stack takes before/after its frame
        available = self.offset + fields.shape[0]
        while self.next_frame < (decoded if final else available - after - step + 1):
            t = self.next_frame
            frames = torch.arange(t, min(decoded, t + step) if final else t + step)
            # window-local indices: the window starts at or before max(0, t - before), and ends past
            # every needed field unless final (where stack_flow's clamp is the video's end)
            stacks = stack_flow(fields, frames - self.offset, stack=stack)
            x = self.backbone.preprocess_views(stacks, views=self.views)
            feats = self.backbone.forward_features(x.flatten(0, 1).to(self.device))
            feats = feats.to("cpu", torch.float16).numpy().reshape(x.shape[0], x.shape[1], *feats.shape[1:])
            if self.buffer is None:
                kind = self.backbone.meta.get("features", "pooled")
                dims = ("view", "time", "channel") if kind == "pooled" else ("view", "time", "channel", "y", "x")
                self.buffer = self.make_buffer(x.shape[0], dims)
            self.buffer.put(feats)
            self.next_frame = int(frames[-1]) + 1
            drop = max(0, self.next_frame - before - self.offset)
            fields, self.offset = fields[drop:], self.offset + drop
        self.fields = [fields]
        if final and self.buffer is not None:
            self.buffer.close(decoded)
