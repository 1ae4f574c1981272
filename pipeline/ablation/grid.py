"""The trial grid: heads x segments x modality x [hyper-parameters] x seeds, limited to what the
store's features allow. The optional hyper-parameter axes (`AblateConfig.grid`, `--grid lr=...`)
sweep train-head settings; each point is its own column of the summary table.

`all` keeps every registered head that can run on the store and lists the others with the reason
(spatial heads need spatial maps; pooled heads run on a spatial store by pooling them). Settings a
head cannot take (too few segments, a joint two-stream fusion for a single-stream head) are left
out with their reason too. A head named explicitly that cannot run at all is a one-line error.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    params: tuple[tuple[str, Any], ...] = ()  # one point of the hyper-parameter grid (--grid), sorted

    @property
    def name(self) -> str:
        """Run dir name, e.g. `trn_multiscale_8seg_rgb+flow_seed1` (`..._lr0.001_weight_decay0.1` on a grid)."""
        grid = "".join(f"_{k}{v}" for k, v in self.params)
        return f"{self.head}_{self.segments}seg_{self.modality}{grid}_seed{self.seed}"

    @property
    def grid_label(self) -> str:
        """'lr=0.001 weight_decay=0.1' ('' without a hyper-parameter grid)."""
        return grid_label(self.params)

    @property
    def setting(self) -> tuple:
        """A column of the summary table: (segments, modality), plus the grid label on a grid."""
        return (self.segments, self.modality) + ((self.grid_label,) if self.params else ())


def grid_label(params: tuple[tuple[str, Any], ...]) -> str:
    return " ".join(f"{k}={v}" for k, v in params)


def grid_points(grid: dict[str, tuple]) -> list[tuple[tuple[str, Any], ...]]:
    """The cartesian product of the hyper-parameter axes, e.g. {lr: (1, 2), dropout: (0.5,)} ->
    [(("dropout", 0.5), ("lr", 1)), (("dropout", 0.5), ("lr", 2))]; [()] without axes."""
    keys = sorted(grid)
    return [tuple(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


@dataclass(frozen=True)
class Skipped:
    head: str
    reason: str
    setting: tuple | None = None  # (segments, modality); None: the head is out entirely


@dataclass(frozen=True)
class Grid:
    trials: list[Trial]
    skipped: list[Skipped]
    stream_shapes: dict[str, tuple[int, ...]]  # {stream: per-frame shape in the store}

    @property
    def heads(self) -> list[str]:
        return list(dict.fromkeys(t.head for t in self.trials))

    @property
    def settings(self) -> list[tuple]:
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
            trials.extend(Trial(head, segments, modality, seed, point)
                          for point in grid_points(cfg.grid) for seed in cfg.seeds)
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


def parse_grid(axes: Sequence[str]) -> dict[str, list] | None:
    """('lr=1e-3,3e-3', 'dropout=0.5') -> {'lr': [0.001, 0.003], 'dropout': [0.5]}, as --grid gives them;
    None when there are none."""
    grid: dict[str, list] = {}
    for axis in axes:
        key, sep, values = axis.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not values.strip():
            raise ConfigError(f"--grid: expected FIELD=V1,V2,... got {axis!r}")
        if key in grid:
            raise ConfigError(f"--grid: {key} given twice")
        grid[key] = [_scalar(v.strip()) for v in values.split(",") if v.strip()]
    return grid or None


def _scalar(text: str) -> Any:
    """'1e-3' -> 0.001 (YAML 1.1 would keep it text), '8' -> 8, 'true' -> True, else the text."""
    import yaml

    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)
