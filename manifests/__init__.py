"""The manifest: the table of videos (`video_id, path, label, split` + optional `start, end, group`).

Public API (other modules code against exactly this):

    VideoEntry(video_id, path, label, split, start=None, end=None, group=None)   frozen; validates itself
    Manifest(entries, classes, source=None, root=Path("."))
        .label_index(label) -> int       position in `classes`
        .by_split(split) -> list[VideoEntry]
        .resolve(entry) -> Path          absolute paths kept, else root / path
        .sha256() -> str                 stable content hash (classes + entries by id)
        .counts()  .with_classes(names)  .rebased(root)
    read_manifest(path, *, root=None, classes=None, check_exists=False) -> Manifest
    write_manifest(manifest, path)       .csv or .jsonl + `<stem>.classes.txt`, atomically
    read_class_list(path)  classes_path(manifest_path)
    CONVERTERS                           Registry("manifest format"): jester, ssv2, ucf101,
                                         hmdb51, kinetics, folder
    convert(format, sources, **options) -> Manifest

Schema and file formats: `manifests/schema.py` and `manifests/table.py`; the converters and the
class-index convention of each dataset: `manifests/converters/__init__.py`. Small examples live
in `manifests/examples/`. Errors are `ManifestError` (or `ConfigError` for a bad option) with a
one-line message that names the file and line.
"""

from manifests.converters import CONVERTERS, convert
from manifests.schema import SPLITS, Manifest, VideoEntry, canonical_split
from manifests.table import classes_path, read_class_list, read_manifest, write_manifest

__all__ = [
    "CONVERTERS",
    "SPLITS",
    "Manifest",
    "VideoEntry",
    "canonical_split",
    "classes_path",
    "convert",
    "read_class_list",
    "read_manifest",
    "write_manifest",
]
