"""The manifest schema: `VideoEntry` (one row) and `Manifest` (rows + class list + root).

Columns, in file order:

    video_id  any non-empty string without line breaks or NUL; unique in the manifest.
              Ids such as `a/b`, `../x` or `ünïcode` are legal: the store encodes keys itself.
    path      a video file OR a folder of frame images, relative to the manifest's root
              (the `--root` flag, else the folder holding the manifest); absolute paths are kept.
    label     a class name from the class list; may be empty (None) only for `test` entries.
    split     `train`, `val` or `test` (converters map aliases such as `validation` -> `val`).
    start     optional trim start in seconds (>= 0); empty means "from the beginning".
    end       optional trim end in seconds (> start); empty means "to the end".
    group     optional: what the video shares with others (the source video it was cut from, an
              actor and scene; UCF101's `g08`, a Kinetics YouTube id); empty means its own group.
              Splits stpipe makes keep a group on one side, and a train/val overlap is reported.

Entries validate themselves when built, with a message that names the problem; readers add the
file and line in front of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipeline.errors import ManifestError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "training": "train",
    "validation": "val",
    "validate": "val",
    "valid": "val",
    "testing": "test",
}
COLUMNS = ("video_id", "path", "label", "split", "start", "end", "group")
REQUIRED_COLUMNS = ("video_id", "path", "label", "split")
_LINE_BREAK_OR_NUL = re.compile("[\n\r\x00]")


def canonical_split(name: str) -> str:
    """`train`/`val`/`test` for a split name or a common alias (converters only)."""
    key = name.strip().lower()
    key = SPLIT_ALIASES.get(key, key)
    if key not in SPLITS:
        raise ManifestError(f"unknown split {name!r} (expected train, val or test)")
    return key


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise ManifestError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ManifestError(f"empty {what}")
    if _LINE_BREAK_OR_NUL.search(value):
        raise ManifestError(f"{what} {value!r} contains a line break or NUL")


def _check_time(what: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ManifestError(f"{what} must be a finite number of seconds >= 0, got {value!r}")


@dataclass(frozen=True)
class VideoEntry:
    """One video (or one trimmed segment of a video) of a manifest."""

    video_id: str
    path: str
    label: str | None
    split: str
    start: float | None = None
    end: float | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        _check_text("video_id", self.video_id)
        _check_text("path", self.path)
        if self.label is not None:
            _check_text("label", self.label)
        if self.group is not None:
            _check_text("group", self.group)
        if self.split not in SPLITS:
            hint = SPLIT_ALIASES.get(str(self.split).strip().lower())
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise ManifestError(f"unknown split {self.split!r} (expected train, val or test{extra})")
        if self.label is None and self.split != "test":
            raise ManifestError(f"{self.split} entry {self.video_id!r} has no label (only test entries may)")
        _check_time("start", self.start)
        _check_time("end", self.end)
        for name in ("start", "end"):  # 10 and 10.0 are the same time: keep one type for hashing
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise ManifestError(f"start {self.start} must be before end {self.end}")


@dataclass(frozen=True)
class Manifest:
    """A validated table of videos plus its class list (list order = class index).

    `root` is the folder that relative entry paths start from; `source` is the file it was read
    from (None when built in memory, e.g. by a converter).
    """

    entries: list[VideoEntry]
    classes: list[str]
    source: Path | None = None
    root: Path = field(default_factory=lambda: Path("."))

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for i, name in enumerate(self.classes):
            _check_text("class name", name)
            if name in index:
                raise ManifestError(f"class {name!r} is listed twice in the class list")
            index[name] = i
        object.__setattr__(self, "_class_index", index)
        seen: set[str] = set()
        for entry in self.entries:
            if entry.video_id in seen:
                raise ManifestError(f"duplicate video_id {entry.video_id!r}")
            seen.add(entry.video_id)
            if entry.label is not None and entry.label not in index:
                raise ManifestError(f"video {entry.video_id!r}: label {entry.label!r} is not in the class list")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def label_index(self, label: str) -> int:
        """Class index of `label` (its position in `classes`)."""
        try:
            return self._class_index[label]  # type: ignore[attr-defined]
        except KeyError:
            raise ManifestError(f"label {label!r} is not in the class list") from None

    def by_split(self, split: str) -> list[VideoEntry]:
        """Entries of one split (`train`, `val` or `test`), in manifest order."""
        if split not in SPLITS:
            raise ManifestError(f"unknown split {split!r} (expected train, val or test)")
        return [entry for entry in self.entries if entry.split == split]

    def resolve(self, entry: VideoEntry) -> Path:
        """Where the video (file or frame folder) of `entry` lives: absolute paths kept, else under root."""
        path = Path(entry.path)
        return path if path.is_absolute() else self.root / path

    def with_classes(self, classes: Sequence[str]) -> Manifest:
        """The same entries under another class list (every label must be in it)."""
        return Manifest(entries=self.entries, classes=list(classes), source=self.source, root=self.root)

    def rebased(self, root: str | Path) -> Manifest:
        """The same videos with relative paths rewritten to start from `root` (absolute ones kept)."""
        root = Path(root).absolute()
        entries = [
            e if Path(e.path).is_absolute()
            else replace(e, path=Path(os.path.relpath(self.resolve(e).absolute(), root)).as_posix())
            for e in self.entries
        ]
        return Manifest(entries=entries, classes=self.classes, source=self.source, root=root)

    def counts(self) -> dict[str, Counter]:
        """Per split, how many entries each label has (None counts unlabelled test entries)."""
        result: dict[str, Counter] = {split: Counter() for split in SPLITS}
        for entry in self.entries:
            result[entry.split][entry.label] += 1
        return result

    def sha256(self) -> str:
        """Stable content hash for provenance.

        Covers the class list (in order: it defines the indices) and the entries sorted by
        video_id, so it does not change with row order, CSV vs JSONL, or the root folder. An entry
        without a group hashes as before groups existed (stores made then keep matching).
        """
        digest = hashlib.sha256()
        digest.update(json.dumps(self.classes, ensure_ascii=False).encode("utf-8"))
        for entry in sorted(self.entries, key=lambda e: e.video_id):
            fields = {k: v for k, v in asdict(entry).items() if k != "group" or v is not None}
            row = json.dumps(fields, ensure_ascii=False, sort_keys=True)
            digest.update(b"\n" + row.encode("utf-8"))
        return digest.hexdigest()
