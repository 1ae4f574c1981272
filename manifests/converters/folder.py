"""A folder-per-class tree: `DIR/<class>/<video>`, or `DIR/<split>/<class>/<video>`.

A video is a file with a video suffix, or a folder that directly holds frame images. When every
top-level folder is a split name (`train`, `val`, `test` or an alias such as `validation`) the
tree is read as split/class/video; otherwise it is class/video and every entry gets `split`.
Classes are the sorted class-folder names (as torchvision's ImageFolder numbers them), including
folders with no video in some split, so indices do not depend on which split is converted.

The video id is the path below DIR without the video suffix (`dog/clip1`, `train/dog/clip1`);
paths are relative to DIR and the returned manifest's root is DIR. Hidden entries and other files
are skipped; frame images directly inside a class folder are an error (wrong folder level).

`group_folders=True` (`--group-folders`) reads one more level, `<class>/<group>/<video>`: the
sub-folder name is each video's group (its source video, actor or scene), which splits keep whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from manifests.converters._common import CONVERTERS, EntryCollector
from manifests.schema import SPLITS, Manifest, canonical_split
from pipeline.errors import ConfigError, ManifestError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp", ".ts"}
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_split_name(name: str) -> bool:
    try:
        canonical_split(name)
    except ManifestError:
        return False
    return True


def _holds_frames(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def _scan_class(root: Path, class_dir: Path, split: str, out: EntryCollector, group_folders: bool) -> None:
    if group_folders:
        for item in _visible(class_dir):
            if item.is_dir() and not _holds_frames(item):
                _scan_videos(root, item, class_dir.name, split, out, group=item.name)
            elif item.is_dir() or item.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
                raise ManifestError(f"{item}: directly in class folder {class_dir}; --group-folders "
                                    "expects DIR/<class>/<group>/<video>")
    else:
        _scan_videos(root, class_dir, class_dir.name, split, out, group=None)


def _scan_videos(root: Path, folder: Path, label: str, split: str, out: EntryCollector, group: str | None) -> None:
    for item in _visible(folder):
        relative = item.relative_to(root).as_posix()
        if item.is_dir():
            if not _holds_frames(item):
                raise ManifestError(f"{item}: neither a video file nor a folder of frame images")
            video_id = relative
        elif item.suffix.lower() in VIDEO_SUFFIXES:
            video_id = relative[: -len(item.suffix)]
        elif item.suffix.lower() in IMAGE_SUFFIXES:
            level = "group folder" if group is not None else "class folder"
            raise ManifestError(f"{item}: frame image directly in {level} {folder}; expected a video folder below it")
        else:
            continue
        out.add(str(item), video_id=video_id, path=relative, label=label, split=split, group=group)


@CONVERTERS.register("folder", dataset="folder-per-class tree", files="one folder")
def convert_folder(sources: Sequence[Path], *, split: str = "train", group_folders: bool = False) -> Manifest:
    """DIR/<class>/<video> (or DIR/<split>/<class>/<video>; `group_folders`: <class>/<group>/<video>)
    -> Manifest rooted at DIR."""
    if len(sources) != 1:
        raise ConfigError(f"folder: expected exactly one folder, got {len(sources)}")
    root = Path(sources[0])
    if not root.is_dir():
        raise ManifestError(f"{root}: folder not found")
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected train, val or test")
    top = [p for p in _visible(root) if p.is_dir()]
    if not top:
        raise ManifestError(f"{root}: no class folders inside")
    if all(_is_split_name(p.name) for p in top):
        layout = [(canonical_split(p.name), p) for p in top]
    else:
        layout = [(split, root)]
    out = EntryCollector()
    classes: set[str] = set()
    for split_name, split_dir in layout:
        for class_dir in (p for p in _visible(split_dir) if p.is_dir()):
            classes.add(class_dir.name)
            _scan_class(root, class_dir, split_name, out, group_folders)
    if not out.entries:
        raise ManifestError(f"{root}: no videos or frame folders found in its class folders")
    manifest = out.manifest(sorted(classes))
    return Manifest(entries=manifest.entries, classes=manifest.classes, root=root.absolute())
