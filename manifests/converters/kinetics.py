"""Kinetics 400/600/700: the official CSV files (or the JSON variant).

As distributed (see ../shared/annotations/FORMAT_NOTES.md), the CSV header names the columns:
`label,youtube_id,time_start,time_end,split[,is_cc]`. K400 quotes every label with a space, K600
and K700 quote nothing, test files have no `label` column, K700 calls its validation split
`validate`. Columns are found by header name and the CSV is parsed by the `csv` module, so all of
these read the same. youtube ids may start with `-` or `_` and stay strings. The JSON variant is
`{"<youtube_id>": {"annotations": {"label", "segment": [start, end]}, "subset": ...}}`.

Videos: the official crawler (ActivityNet `Crawler/Kinetics/download.py`) writes trimmed clips
to `<label>/<youtube_id>_<start:%06d>_<end:%06d>.mp4`, and clips of files without labels to
`test/`. That clip name (without `.mp4`) is the video id, so two segments of one YouTube video
stay distinct; the YouTube id is the group (clips of one YouTube video share it). Because the clips are already cut, entries carry no start/end; `trim=True` adds
them for full-length downloads and requires a path template (e.g. `--path-template {youtube_id}.mp4`).
`underscore_dirs=True` replaces spaces with `_` in the class folder (Showmax-style downloaders).

Kinetics ships no class index: classes are the sorted labels found in the given files, so convert
train and val together (or pass a class list) to get every class. A folder source means every
`*.csv` directly inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from manifests.converters._common import CONVERTERS, EntryCollector, PathTemplate, gather
from manifests.schema import canonical_split
from manifests.textio import iter_csv_rows, iter_json_members, read_text
from pipeline.errors import ConfigError, ManifestError

_REQUIRED = ("youtube_id", "time_start", "time_end", "split")
_FIELDS = ("label", "class_dir", "youtube_id", "start", "end", "split")

Row = tuple[str, dict[str, Any]]  # (file:line, {label, youtube_id, time_start, time_end, split})


def _role(path: Path, explicit: bool) -> str | None:
    suffix = path.suffix.lower()
    if explicit:
        return suffix[1:] if suffix in (".csv", ".json") else None
    return "csv" if suffix == ".csv" else None


def _csv_header(path: Path, line: int, record: list[str]) -> list[str]:
    header = [name.strip() for name in record]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise ManifestError(f"{path}:{line}: missing column {missing[0]!r} in header {','.join(header)}")
    return header


def _csv_rows(path: Path) -> Iterator[Row]:
    empty = f"{path}: empty file (no header row)"
    for line, row in iter_csv_rows(path, read_text(path), _csv_header, empty=empty):
        yield f"{path}:{line}", row


def _json_rows(path: Path) -> Iterator[Row]:
    for line, youtube_id, item in iter_json_members(path, read_text(path)):
        where = f"{path}:{line}"
        notes = item.get("annotations") if isinstance(item, dict) else None
        segment = notes.get("segment") if isinstance(notes, dict) else None
        if not isinstance(segment, list) or len(segment) != 2 or not isinstance(item.get("subset"), str):
            raise ManifestError(f"{where}: {youtube_id!r} lacks annotations.segment [start, end] or subset")
        label = notes.get("label")
        if label is not None and not isinstance(label, str):
            raise ManifestError(f"{where}: {youtube_id!r} has a label that is not a string: {label!r}")
        yield where, {"label": label or "", "youtube_id": youtube_id,
                      "time_start": segment[0], "time_end": segment[1], "split": item["subset"]}


def _seconds(where: str, name: str, value: Any) -> int | float:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise ManifestError(f"{where}: {name} {value!r} is not a number of seconds")
    return int(number) if number.is_integer() else number


def _add(where: str, row: dict[str, Any], template: PathTemplate, trim: bool, underscore: bool,
         out: EntryCollector) -> None:
    youtube_id = row["youtube_id"].strip()
    label = (row.get("label") or "").strip() or None
    start = _seconds(where, "time_start", row["time_start"])
    end = _seconds(where, "time_end", row["time_end"])
    try:
        split = canonical_split(row["split"])
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if not youtube_id:
        raise ManifestError(f"{where}: empty youtube_id")
    if not 0 <= start < end:
        raise ManifestError(f"{where}: time_start {start} must be >= 0 and before time_end {end}")
    class_dir = label if label is not None else "test"
    if underscore:
        class_dir = class_dir.replace(" ", "_")
    clip = f"{youtube_id}_{int(start):06d}_{int(end):06d}"  # the crawler's clip name (%06d truncates)
    fields = {"label": label or "", "class_dir": class_dir, "youtube_id": youtube_id,
              "start": start, "end": end, "split": split}
    out.add(where, video_id=clip, path=template.render(where, **fields), label=label, split=split,
            start=start if trim else None, end=end if trim else None, group=youtube_id)


@CONVERTERS.register("kinetics", dataset="Kinetics 400/600/700", files="*.csv or *.json")
def convert_kinetics(
    sources: Sequence[Path],
    *,
    path_template: str | None = None,
    underscore_dirs: bool = False,
    trim: bool = False,
):
    """Kinetics CSV/JSON -> Manifest. Path template fields: {label}, {class_dir}, {youtube_id},
    {start}, {end}, {split}."""
    if trim and path_template is None:
        raise ConfigError(
            "--trim is for full-length videos and needs --path-template (e.g. '{youtube_id}.mp4'): "
            "the crawler's clips are already cut"
        )
    found = gather(sources, _role, dataset="Kinetics", expected="a .csv or .json annotation file")
    files = [(p, _csv_rows) for p in found.get("csv", [])] + [(p, _json_rows) for p in found.get("json", [])]
    if not files:
        raise ManifestError(f"no Kinetics .csv files among {', '.join(map(str, sources))}")
    template = PathTemplate(path_template, "{class_dir}/{youtube_id}_{start:06d}_{end:06d}.mp4", _FIELDS)
    out = EntryCollector()
    for path, rows in files:
        for where, row in rows(path):
            _add(where, row, template, trim, underscore_dirs, out)
    return out.manifest(sorted({e.label for e in out.entries if e.label is not None}))
