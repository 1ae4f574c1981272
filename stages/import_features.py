"""`stpipe import`: features made elsewhere -> a feature store that stage two reads like an extracted one.

Sources: an HDF5 file written by `stpipe export`, or per-video `.npy` files ((T, D) or (T, C, H, W))
plus a manifest for labels and splits (`pipeline/interop.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError, full_disk_as_error
from pipeline.interop import InteropResult, import_hdf5, import_npy
from pipeline.progress import Progress
from pipeline.store.urls import store_errors


@dataclass(frozen=True)
class ImportConfig:
    # an .h5 export, or a folder of <video_id>.npy ("" = the manifest's paths are .npy files)
    source: str = arg("", positional=True)
    output: str = arg("", "Store path or URL to build (file://, memory://, s3://...).", short="-o", required=True)
    manifest: str = arg("", ".npy imports: manifest with labels and splits (its paths may be the .npy files).", short="-m")
    root: str = arg("", "Folder the manifest's relative paths start from (default: its folder).")
    flow_dir: str = arg("", ".npy imports: folder of flow-stream features, named like the rgb ones.")
    name_template: str = arg("{video_id}.npy", "File name of a video's features in SOURCE.")
    backbone: str = arg("imported", "Backbone name to record for imported .npy features.")
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    overwrite: bool = arg(False, "Replace a store made from other features.", negatable=False)

    def __post_init__(self) -> None:
        if not self.output:
            raise ConfigError("import needs an output store (-o/--output)")
        if not self.source and not self.manifest:
            raise ConfigError("import needs a SOURCE (.h5 file or folder of .npy files) or a manifest of .npy paths")
        if self.source and not Path(self.source).exists():
            raise ConfigError(f"{self.source}: no such file or folder")
        if self.is_hdf5 and (self.manifest or self.flow_dir):
            raise ConfigError(f"{self.source}: an HDF5 export carries its own labels; drop --manifest/--flow-dir")
        if not self.is_hdf5 and not self.manifest:
            raise ConfigError("importing .npy features needs a manifest (-m/--manifest) for labels and splits")
        try:
            valid = "{video_id}" in self.name_template and bool(self.name_template.format(video_id="x"))
        except (KeyError, IndexError, ValueError):
            valid = False
        if not valid:
            raise ConfigError(f"name_template must contain {{video_id}} and no other fields, got {self.name_template!r}")

    @property
    def is_hdf5(self) -> bool:
        return bool(self.source) and Path(self.source).is_file()


def run(cfg: ImportConfig, progress: Progress | None = None) -> InteropResult:
    """`progress`: the "import" task, one unit per video stored (pipeline.progress)."""
    options = dict(storage_options=cfg.storage_options, overwrite=cfg.overwrite,
                   progress=progress)
    with store_errors(cfg.output), full_disk_as_error(cfg.output):  # a 403, a lost bucket, a full disk: one line
        if cfg.is_hdf5:
            return import_hdf5(cfg.source, cfg.output, **options)
        return import_npy(cfg.manifest, cfg.output, features_dir=cfg.source or None, flow_dir=cfg.flow_dir or None,
                          name_template=cfg.name_template, root=cfg.root or None, backbone=cfg.backbone, **options)
