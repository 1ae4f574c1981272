"""The end-to-end network: one backbone per stream, the head run's head(s), late or ST-ResNet fusion.

    clips {stream: (B, N, C, H, W)} --backbones--> features {stream: (B, N, D[, h, w])}
        --head run's standardisation--> head(s) --> {stream: logits}   (forward; average = prediction)

`forward` returns each stream's logits (a loss per stream, as in stage two and ST-ResNet; DDP
only sees what forward returns). The fused prediction averages the non-softmaxed scores (`fuse`).

The head run's standardisation (when it used one) stays a fixed part of the network, with each
channel's std floored at a tenth of the median (see `STD_FLOOR`).

Partial BN (TSN): in training mode every BatchNorm of a backbone except its first keeps its
running statistics frozen (eval mode) and, as in TSN's code, its affine parameters too; the
first BN adapts to the new input statistics (for the motion stream, flow instead of RGB).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.backbones import Backbone, build_backbone_from_meta
from pipeline.finetune.st_resnet import STResNetTrunks, collapse_to_2d
from pipeline.training.model import build_model

STD_FLOOR = 0.1  # standardisation divides by at least this fraction of the stream's median channel std


def fuse(stream_logits: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """The prediction: the average of the streams' non-softmaxed scores, weighted by the head run's
    late-fusion weights when it has them (`FinetuneModel.fusion_weights`)."""
    if weights:
        return sum(weights[s] * v.float() for s, v in stream_logits.items())
    return torch.stack([v.float() for v in stream_logits.values()]).mean(0)


class FinetuneModel(nn.Module):
    def __init__(
        self,
        backbones: Mapping[str, Backbone],
        head: nn.Module,
        *,
        stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        fusion: str = "late",
        st_stages: tuple[int, ...] = (2, 3, 4, 5),
        temporal_kernel: int = 3,
        batch_norm: str = "frozen",
    ):
        super().__init__()
        self.backbones = nn.ModuleDict(dict(backbones))
        self.head = head
        self.streams = tuple(backbones)
        self.standardized = tuple(s for s in self.streams if stats and s in stats)
        for stream in self.standardized:
            mean, std = (torch.tensor(np.array(v), dtype=torch.float32) for v in stats[stream])  # own copies
            # A channel (nearly) constant in the cache has a (nearly) zero std: harmless to a head on fixed
            # features, but once the backbone trains, its 1/std would blow any change in it up (to inf).
            floor = max(STD_FLOOR * float(std.median()), 1e-6)
            self.register_buffer(f"mean_{stream}", mean)
            self.register_buffer(f"std_{stream}", std.clamp(min=floor))
        self.fusion = fusion
        self.st = None
        if fusion == "st-resnet":
            self.st = STResNetTrunks(self.backbones["rgb"].trunk, self.backbones["flow"].trunk, stages=st_stages,
                                     length=temporal_kernel)
        self.frozen_bn: list[nn.Module] = []
        for backbone in self.backbones.values():
            backbone.requires_grad_(True)
            for unused in (backbone.head, backbone.spatial_head) + ((backbone.pool,) if backbone.features == "spatial" else ()):
                if unused is not None:  # the backbone's own classifier is not part of the network
                    unused.requires_grad_(False)
            if batch_norm != "train":
                self.frozen_bn += freeze_bn(backbone.trunk, keep_first=batch_norm == "partial")

    # -- modes -------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> FinetuneModel:
        super().train(mode)
        if mode:
            for bn in self.frozen_bn:
                bn.eval()
        return self

    def parameter_groups(self, lr: float, backbone_lr_mult: float) -> list[dict[str, Any]]:
        trainable = [p for b in self.backbones.values() for p in b.parameters() if p.requires_grad]
        return [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr": lr, "name": "head"},
                {"params": trainable, "lr": lr * backbone_lr_mult, "name": "backbone"}]

    # -- forward -----------------------------------------------------------------------------

    def features(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{stream: (B, N, C, H, W)} -> {stream: (B, N, D) or (B, N, C, h, w)} float32, standardised."""
        batch, segments = inputs[self.streams[0]].shape[:2]
        frames = {s: inputs[s].flatten(0, 1) for s in self.streams}
        if self.st is None:
            flat = {s: self.backbones[s].forward_features(frames[s]) for s in self.streams}
        else:
            self.st.set_segments(segments)
            maps = self.st(*(self._prepared(s, frames[s]) for s in ("rgb", "flow")))
            flat = {s: self._pooled(s, m) for s, m in zip(("rgb", "flow"), maps)}
        out = {}
        for stream, x in flat.items():
            x = x.reshape(batch, segments, *x.shape[1:])
            if stream in self.standardized:
                shape = (-1,) + (1,) * (x.ndim - 3)
                mean, std = getattr(self, f"mean_{stream}"), getattr(self, f"std_{stream}")
                x = (x - mean.view(shape)) / std.view(shape)
            out[stream] = x
        return out

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.head.stream_logits(self.features(inputs))

    @property
    def fusion_weights(self) -> dict[str, float] | None:
        """The late fusion's stream weights the head run chose (pipeline.training.fusion); None: equal."""
        return getattr(self.head, "weights", None)

    def _prepared(self, stream: str, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.backbones[stream].channels_last else x

    def _pooled(self, stream: str, spatial: torch.Tensor) -> torch.Tensor:
        backbone = self.backbones[stream]
        return backbone.from_trunk(spatial).float()

    # -- export ------------------------------------------------------------------------------

    def export_backbone(self, stream: str) -> Backbone:
        """A plain per-frame copy of a stream's backbone (ST-ResNet filters collapsed, see st_resnet)."""
        backbone = copy.deepcopy(self.backbones[stream])
        if self.st is not None:
            backbone.trunk = collapse_to_2d(backbone.trunk)
        backbone.requires_grad_(False)
        return backbone.eval()


def freeze_bn(module: nn.Module, *, keep_first: bool) -> list[nn.Module]:
    """The BatchNorm layers (after the first with `keep_first`: TSN's partial BN): affine frozen now,
    statistics frozen by `FinetuneModel.train`."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    frozen = norms[1:] if keep_first else norms
    for bn in frozen:
        for p in bn.parameters():
            p.requires_grad_(False)
    return frozen


def build_finetune_model(setup, *, device: torch.device | str = "cpu") -> FinetuneModel:
    """The network a `Setup` describes, initialised from the store's backbone and the run's head."""
    cfg = setup.cfg
    backbones = {s: build_backbone_from_meta(setup.backbones[s], device="cpu") for s in setup.streams}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # new heads (a stream the head run did not have) start the same everywhere
        head = build_model(setup.head_spec)
    load_head(head, setup)
    model = FinetuneModel(backbones, head, stats=setup.stats, fusion=cfg.fusion, st_stages=tuple(cfg.st_stages),
                          temporal_kernel=cfg.temporal_kernel, batch_norm=cfg.batch_norm)
    return model.to(device)


def load_head(head: nn.Module, setup) -> None:
    """Copy the run's head weights into the fine-tune's head(s), stream by stream."""
    run_late = setup.run_spec["fusion"] == "late"
    for key, source in setup.head_sources.items():
        if source is None:
            continue
        target = head[key] if setup.head_spec["fusion"] == "late" else head
        state = ({k[len(source) + 1:]: v for k, v in setup.head_state.items() if k.startswith(source + ".")}
                 if run_late else setup.head_state)
        target.load_state_dict(state)
