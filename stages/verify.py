"""`stpipe verify STORE`: read every chunk of a store back, list the damaged videos; `--repair` marks
them for redo (re-running the extract or import command that made the store redoes exactly them) and
drops a damaged pack or index (rebuilt from the groups). How chunks are checked: `pipeline/store/verify.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError, full_disk_as_error
from pipeline.progress import Advanced, Finished, Progress, Started, emitter
from pipeline.store import FeatureStore
from pipeline.store.lease import StoreLease
from pipeline.store.verify import Damage, check_units, repair, store_units


@dataclass(frozen=True)
class VerifyConfig:
    store: str = arg("", positional=True, required=True)
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    repair: bool = arg(False, "Mark the damaged videos for redo (re-running the extract or import command that made "
                              "STORE redoes exactly them) and drop a damaged pack or index (rebuilt from the videos).",
                       negatable=False)
    threads: int = arg(0, "Arrays read at once (0 = 8 on a local disk, 32 on an object store).")

    def __post_init__(self) -> None:
        if not self.store:
            raise ConfigError("verify needs a STORE")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")


@dataclass
class VerifyResult:
    store: str
    videos: int  # complete videos checked
    derived: int  # arrays outside videos/ checked (pack, index, ...)
    chunks: int
    nbytes: int
    seconds: float
    damage: list[Damage]
    repaired: dict[str, int] = field(default_factory=dict)  # {"videos": n, "derived": n} when --repair

    @property
    def damaged_videos(self) -> list[str]:
        return sorted({d.video_id for d in self.damage if d.video_id})

    @property
    def damaged_derived(self) -> list[str]:
        return sorted({d.array for d in self.damage if not d.video_id})


def run(cfg: VerifyConfig, progress: Progress | None = None) -> VerifyResult:
    """`progress`: the "verify" task, one unit per video or derived array (with the bytes read)."""
    with full_disk_as_error(cfg.store):
        if not cfg.repair:
            return _verify(cfg, FeatureStore.open(cfg.store, storage_options=cfg.storage_options or None), progress)
        with StoreLease(cfg.store, storage_options=cfg.storage_options or None):  # no extract writes meanwhile
            store = FeatureStore.open(cfg.store, mode="r+", storage_options=cfg.storage_options or None)
            result = _verify(cfg, store, progress)
            result.repaired = repair(store, result.damage)
            return result


def _verify(cfg: VerifyConfig, store: FeatureStore, progress: Progress | None) -> VerifyResult:
    emit = emitter(progress)
    started = time.perf_counter()
    result = VerifyResult(store=cfg.store, videos=0, derived=0, chunks=0, nbytes=0, seconds=0.0, damage=[])
    units = store_units(store)
    emit(Started("verify", total=len(units), unit="item"))
    for name, found in check_units(units, threads=cfg.threads or (8 if store.io.local else 32)):
        if "/" in name:  # derived arrays are paths, videos their keys
            result.derived += 1
        else:
            result.videos += found.chunks > 0 or bool(found.damage)
        result.chunks += found.chunks
        result.nbytes += found.nbytes
        result.damage += found.damage
        message = "\n".join(f"damaged: {d.line()}" for d in found.damage)
        emit(Advanced("verify", amounts={"MiB": found.nbytes / 2**20}, message=message, item=name))
    emit(Finished("verify"))
    result.seconds = time.perf_counter() - started
    return result
