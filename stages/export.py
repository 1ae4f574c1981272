"""`stpipe export`: a feature store -> one HDF5 file (layout in `pipeline/interop.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError
from pipeline.interop import InteropResult, export_hdf5
from pipeline.progress import Progress
from pipeline.store import FeatureStore


@dataclass(frozen=True)
class ExportConfig:
    store: str = arg("", positional=True, required=True)  # store path or fsspec URL
    output: str = arg("", positional=True, required=True)  # local .h5 file
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    arrays: str = arg("", "Comma-separated arrays to write, e.g. rgb,flow_feat (default: all).")
    compression: int = arg(4, "gzip level, 0 = none.")
    overwrite: bool = arg(False, "Replace an existing OUTPUT.", negatable=False)

    def __post_init__(self) -> None:
        if not self.store or not self.output:
            raise ConfigError("export needs a STORE and an OUTPUT .h5 file")
        if not 0 <= self.compression <= 9:
            raise ConfigError(f"compression must be a gzip level 0-9, got {self.compression}")


def run(cfg: ExportConfig, progress: Progress | None = None) -> InteropResult:
    """`progress`: the "export" task, one unit per video written (pipeline.progress)."""
    store = FeatureStore.open(cfg.store, storage_options=cfg.storage_options)
    arrays = [name.strip() for name in cfg.arrays.split(",") if name.strip()]
    return export_hdf5(store, cfg.output, arrays=arrays, overwrite=cfg.overwrite, compression=cfg.compression,
                       progress=progress)
