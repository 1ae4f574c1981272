"""`stpipe pack STORE`: (re)build the store's pack, stage two's few-request copy of the pooled features.

Extract and import rebuild it at their end when the complete set changed; `stpipe pack` does it for
stores written before the pack existed, or after a run that was stopped before its end. Layout and
why: `pipeline/store/pack.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError, full_disk_as_error
from pipeline.progress import Progress
from pipeline.store import FeatureStore
from pipeline.store.lease import StoreLease
from pipeline.store.pack import write_pack


@dataclass(frozen=True)
class PackConfig:
    store: str = arg("", positional=True, required=True)
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    force: bool = arg(False, "Rebuild even when the pack matches the store's index.", negatable=False)

    def __post_init__(self) -> None:
        if not self.store:
            raise ConfigError("pack needs a STORE")


def run(cfg: PackConfig, progress: Progress | None = None) -> dict[str, str]:
    """{array: "written" | "fresh" | "absent"} for each feature array; `progress`: a "pack <array>"
    task (videos) per pack written."""
    # the lease: no extract writes meanwhile
    with full_disk_as_error(cfg.store), StoreLease(cfg.store, storage_options=cfg.storage_options or None):
        store = FeatureStore.open(cfg.store, mode="r+", storage_options=cfg.storage_options or None)
        store.write_index()  # the pack covers exactly what the index lists as complete
        return write_pack(store, force=cfg.force, progress=progress)
