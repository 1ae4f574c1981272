"""The trial grid: heads x segments x modality x seeds, limited to what the store's features allow.

`all` keeps every registered head that can run on the store and lists the others with the reason
(spatial heads need spatial maps; pooled heads run on a spatial store by pooling them). Settings a
head cannot take (too few segments, a joint two-stream fusion for a single-stream head) are left
out with their reason too. A head named explicitly that cannot run at all is a one-line error.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.ablation.config import AblateConfig
from pipeline.errors import ConfigError, StoreError
from pipeline.heads import HEADS
from pipeline.store import FeatureStore
from pipeline.training.config import MODALITY_STREAMS, STREAM_ARRAYS


@dataclass(frozen=True, order=True)
class Trial:
    head: str
    segments: int
    modality: str
    seed: int

    @property
    def name(self) -> str:
        """Run dir name, e.g. `trn_multiscale_8seg_rgb+flow_seed1`."""
        return f"{self.head}_{self.segments}seg_{self.modality}_seed{self.seed}"

    @property
    def setting(self) -> tuple[int, str]:
        """A column of the summary table: (segments, modality)."""
        return self.segments, self.modality


@dataclass(frozen=True)
class Skipped:
    head: str
    reason: str
    setting: tuple[int, str] | None = None  # None: the head is out entirely


@dataclass(frozen=True)
class Grid:
    trials: list[Trial]
    skipped: list[Skipped]
    stream_shapes: dict[str, tuple[int, ...]]  # {stream: per-frame shape in the store}

    @property
    def heads(self) -> list[str]:
        return list(dict.fromkeys(t.head for t in self.trials))

    @property
    def settings(self) -> list[tuple[int, str]]:
        return list(dict.fromkeys(t.setting for t in self.trials))


def stream_shapes(store: FeatureStore) -> dict[str, tuple[int, ...]]:
    """{stream: per-frame shape} of the cached streams, (D,) or (C, H, W), from one complete video."""
    index = store.index()
    complete = np.flatnonzero(index["status"] == "complete")
    if not len(complete):
        raise StoreError(f"{store.url}: the store holds no complete videos")
    group = store.root["videos"][str(index["key"][complete[0]])]
    return {stream: tuple(int(v) for v in group[name].shape[2:])
            for stream, name in STREAM_ARRAYS.items() if name in group}


def expand_grid(cfg: AblateConfig, store: FeatureStore) -> Grid:
    shapes = stream_shapes(store)
    for modality in cfg.modalities:
        missing = [s for s in MODALITY_STREAMS[modality] if s not in shapes]
        if missing:
            hint = " (extract with --flow --flow-features)" if "flow" in missing else ""
            raise ConfigError(f"--modality {modality}: {store.url} has no {STREAM_ARRAYS[missing[0]]!r} "
                              f"features{hint}")
    spatial = all(len(shape) == 3 for shape in shapes.values())
    explicit = "all" not in cfg.heads
    names = list(cfg.heads) if explicit else HEADS.names()
    fusion = cfg.train.get("fusion", "late")
    trials, skipped = [], []
    for head in names:
        meta = HEADS.meta(head)  # unknown names: RegistryError listing the known ones
        if meta["input_kind"] == "spatial" and not spatial:
            reason = "needs spatial feature maps; the store holds pooled vectors (extract with --features spatial)"
            if explicit:
                raise ConfigError(f"--heads {head}: {reason}")
            skipped.append(Skipped(head, reason))
            continue
        kept = 0
        for segments, modality in itertools.product(cfg.segments, cfg.modalities):
            reason = _setting_problem(meta, segments, modality, fusion)
            if reason:
                skipped.append(Skipped(head, reason, (segments, modality)))
                continue
            kept += 1
            trials.extend(Trial(head, segments, modality, seed) for seed in cfg.seeds)
        if explicit and not kept:
            raise ConfigError(f"--heads {head}: no setting of the grid fits it ({skipped[-1].reason})")
    if not trials:
        raise ConfigError(f"{store.url}: no head of --heads {','.join(cfg.heads)} can run on this store")
    return Grid(trials=trials, skipped=skipped, stream_shapes=shapes)


def _setting_problem(meta: dict, segments: int, modality: str, fusion: str) -> str:
    if segments < meta["min_segments"]:
        return f"needs at least {meta['min_segments']} segments"
    if modality == "rgb+flow" and fusion == "joint" and meta["max_streams"] < 2:
        return "is single-stream; --fusion joint needs a two-stream head"
    return ""
