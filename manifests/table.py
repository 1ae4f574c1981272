"""Reading, validating and writing manifest files (CSV or JSONL) and their class lists.

File formats (chosen by suffix):

- `.csv`: UTF-8, a header row naming the columns (`video_id,path,label,split[,start,end][,group]`,
  any order), RFC-4180 quoting; an empty cell is "no value".
- `.jsonl`: one JSON object per line with the same keys; `label`, `start`, `end`, `group` may be
  null (or "" for `label` and `group`).

Class list, in order of precedence:

1. the sidecar `<manifest stem>.classes.txt` beside the manifest (one name per line, line order =
   class index), written by `write_manifest`;
2. else `classes=` (a list, or a file in the sidecar format: the `--classes FILE` flag);
3. else the sorted unique labels of the manifest.

When both a sidecar and `classes=` are present they must agree, otherwise the class indices would
be ambiguous. Every validation error names the file and line (`file:line: problem`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from manifests.schema import COLUMNS, REQUIRED_COLUMNS, Manifest, VideoEntry
from manifests.textio import atomic_write_texts, iter_csv_rows, read_lines, read_text
from pipeline.errors import ManifestError

FORMATS = (".csv", ".jsonl")
CLASSES_SUFFIX = ".classes.txt"
_OPTIONAL = ("label", "start", "end", "group")  # an empty CSV cell in these columns means "no value"

Row = tuple[int, dict[str, Any]]


def classes_path(manifest_path: str | Path) -> Path:
    """The class-list sidecar of a manifest: `data/jester.csv` -> `data/jester.classes.txt`."""
    path = Path(manifest_path)
    return path.with_name(path.stem + CLASSES_SUFFIX)


def read_class_list(path: str | Path) -> list[str]:
    """Class names, one per line (blank lines ignored); line order is the class index."""
    path = Path(path)
    names: list[str] = []
    first_line: dict[str, int] = {}
    for number, name in read_lines(path):
        if name != name.strip():
            raise ManifestError(f"{path}:{number}: class name {name!r} has leading or trailing whitespace")
        if name in first_line:
            raise ManifestError(f"{path}:{number}: class {name!r} is listed twice (first on line {first_line[name]})")
        first_line[name] = number
        names.append(name)
    return names


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ManifestError(f"{path}: unknown manifest format {suffix or '(no suffix)'!r}; use .csv or .jsonl")
    return suffix


def _check_columns(path: Path, line: int, columns: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ManifestError(f"{path}:{line}: unknown column {unknown[0]!r} (known: {', '.join(COLUMNS)})")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"{path}:{line}: missing required column {missing[0]!r}")


def _csv_header(path: Path, line: int, header: list[str]) -> list[str]:
    _check_columns(path, line, header)
    if len(set(header)) != len(header):
        dup = next(c for c in header if header.count(c) > 1)
        raise ManifestError(f"{path}:{line}: column {dup!r} appears twice")
    return header


def _csv_rows(path: Path, text: str) -> Iterator[Row]:
    empty = f"{path}:1: empty manifest (no header row)"
    for line, cells in iter_csv_rows(path, text, _csv_header, empty=empty):
        row = {name: (value if value or name not in _OPTIONAL else None) for name, value in cells.items()}
        for name in ("start", "end"):
            if row.get(name) is not None:
                row[name] = _parse_seconds(path, line, name, row[name])
        yield line, row


def _jsonl_rows(path: Path, text: str) -> Iterator[Row]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ManifestError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
        _check_columns(path, number, list(record))
        for name in ("label", "group"):
            if record.get(name) == "":
                record[name] = None
        yield number, record


def _parse_seconds(path: Path, line: int, name: str, text: str) -> float:
    """CSV cells are text; JSONL values must already be numbers (VideoEntry checks them)."""
    try:
        return float(text)
    except ValueError:
        raise ManifestError(f"{path}:{line}: {name} must be a number of seconds, got {text!r}") from None


def _entries(path: Path, rows: Iterator[Row]) -> tuple[list[VideoEntry], list[int]]:
    entries: list[VideoEntry] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        try:
            entry = VideoEntry(
                video_id=row["video_id"],
                path=row["path"],
                label=row["label"],
                split=row["split"],
                start=row.get("start"),
                end=row.get("end"),
                group=row.get("group"),
            )
        except ManifestError as exc:
            raise ManifestError(f"{path}:{line}: {exc}") from None
        if entry.video_id in first_line:
            raise ManifestError(
                f"{path}:{line}: duplicate video_id {entry.video_id!r} (first on line {first_line[entry.video_id]})"
            )
        first_line[entry.video_id] = line
        entries.append(entry)
        lines.append(line)
    return entries, lines


def _class_list(
    path: Path, entries: list[VideoEntry], classes: Sequence[str] | str | Path | None
) -> tuple[list[str], str]:
    given: list[str] | None = None
    given_from = "the classes argument"
    if isinstance(classes, (str, Path)):
        given, given_from = read_class_list(classes), str(classes)
    elif classes is not None:
        given = list(classes)
    sidecar = classes_path(path)
    if sidecar.is_file():
        names = read_class_list(sidecar)
        if given is not None and given != names:
            raise ManifestError(f"{path}: class list {given_from} differs from the sidecar {sidecar}")
        return names, str(sidecar)
    if given is not None:
        return given, given_from
    return sorted({e.label for e in entries if e.label is not None}), "the sorted labels"


def read_manifest(
    path: str | Path,
    *,
    root: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    check_exists: bool = False,
) -> Manifest:
    """Read and validate a manifest; every problem is a ManifestError naming file and line.

    Args:
        path: a `.csv` or `.jsonl` manifest.
        root: folder that relative entry paths start from; default: the manifest's folder.
        classes: class names (list) or a class-list file, used when there is no sidecar.
        check_exists: also require every entry's video file or frame folder to exist.
    """
    path = Path(path)
    rows = _csv_rows if _format_of(path) == ".csv" else _jsonl_rows
    entries, lines = _entries(path, rows(path, read_text(path)))
    names, names_from = _class_list(path, entries, classes)
    known = set(names)
    for entry, line in zip(entries, lines):
        if entry.label is not None and entry.label not in known:
            raise ManifestError(f"{path}:{line}: label {entry.label!r} is not in the class list ({names_from})")
    base = Path(root) if root is not None else path.parent
    manifest = Manifest(entries=entries, classes=names, source=path, root=base.absolute())
    if check_exists:
        missing = [(line, manifest.resolve(e)) for e, line in zip(entries, lines) if not manifest.resolve(e).exists()]
        if missing:
            line, where = missing[0]
            more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
            raise ManifestError(f"{path}:{line}: video not found: {where}{more}")
    return manifest


def _seconds_text(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def _columns(manifest: Manifest) -> tuple[str, ...]:
    """The required columns, plus start/end and group when some entry has them."""
    timed = any(e.start is not None or e.end is not None for e in manifest.entries)
    grouped = any(e.group is not None for e in manifest.entries)
    return REQUIRED_COLUMNS + (("start", "end") if timed else ()) + (("group",) if grouped else ())


def format_csv(manifest: Manifest) -> str:
    columns = _columns(manifest)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for e in manifest.entries:
        row = {"video_id": e.video_id, "path": e.path, "label": e.label or "", "split": e.split,
               "start": _seconds_text(e.start), "end": _seconds_text(e.end), "group": e.group or ""}
        writer.writerow([row[c] for c in columns])
    return out.getvalue()


def format_jsonl(manifest: Manifest) -> str:
    columns = _columns(manifest)
    lines = []
    for e in manifest.entries:
        row = {"video_id": e.video_id, "path": e.path, "label": e.label, "split": e.split, "start": e.start,
               "end": e.end, "group": e.group}
        for name in ("start", "end"):
            value = row[name]
            if value is not None and math.isfinite(value) and value.is_integer():
                row[name] = int(value)
        lines.append(json.dumps({c: row[c] for c in columns}, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write `manifest` to `path` (.csv or .jsonl) and its class list to the sidecar, atomically.

    Entry paths are written as they are (relative to whatever root the reader will use).
    Either both files are replaced or, on failure, neither is touched.
    """
    path = Path(path)
    text = format_csv(manifest) if _format_of(path) == ".csv" else format_jsonl(manifest)
    sidecar_text = "".join(name + "\n" for name in manifest.classes)
    try:
        atomic_write_texts({path: text, classes_path(path): sidecar_text})
    except OSError as exc:
        raise ManifestError(f"{exc.filename or path}: cannot write ({exc.strerror})") from None
