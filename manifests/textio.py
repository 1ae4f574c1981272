"""Reading annotation text with errors that name file and line, and atomic writes.

Every reader here works on the exact bytes as distributed: UTF-8 (a BOM is dropped), LF or
CRLF line endings, trailing whitespace left to the caller. CSV rows and JSON elements come with
their line number, so an error (or a converter complaint about one row or object) can name it;
JSON is walked element by element to know that line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ManifestError

_BOM = "\ufeff"
_JSON = json.JSONDecoder()
_WHITESPACE = " \t\r\n"


def read_text(path: Path) -> str:
    """The whole file as text; a missing file or a non-UTF-8 byte is a ManifestError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ManifestError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    return text[1:] if text.startswith(_BOM) else text


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for every non-blank line, without its LF or CRLF ending."""
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


class _LineCounter:
    """Line numbers for increasing offsets in linear total time (large lists have 10^5+ items)."""

    def __init__(self, text: str):
        self.text, self.offset, self.line = text, 0, 1

    def __call__(self, index: int) -> int:
        self.line += self.text.count("\n", self.offset, index)
        self.offset = index
        return self.line


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _decode_at(path: Path, text: str, index: int) -> tuple[Any, int]:
    try:
        return _JSON.raw_decode(text, index)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def _expect(path: Path, text: str, index: int, allowed: str, what: str) -> int:
    index = _skip(text, index)
    if index >= len(text) or text[index] not in allowed:
        found = repr(text[index]) if index < len(text) else "end of file"
        raise ManifestError(f"{path}:{_line_of(text, index)}: invalid JSON (expected {what}, found {found})")
    return index


def _check_end(path: Path, text: str, index: int) -> None:
    index = _skip(text, index)
    if index < len(text):
        raise ManifestError(f"{path}:{_line_of(text, index)}: invalid JSON (extra data after the end)")


def iter_json_array(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each element of a top-level JSON array."""
    index = _expect(path, text, 0, "[", "'['") + 1
    if text[_skip(text, index) : _skip(text, index) + 1] == "]":
        _check_end(path, text, _skip(text, index) + 1)
        return
    line_of = _LineCounter(text)
    while True:
        start = _skip(text, index)
        value, index = _decode_at(path, text, start)
        yield line_of(start), value
        index = _expect(path, text, index, ",]", "',' or ']'")
        if text[index] == "]":
            _check_end(path, text, index + 1)
            return
        index += 1


def iter_json_members(path: Path, text: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, key, value) for each member of a top-level JSON object, duplicates refused."""
    index = _expect(path, text, 0, "{", "'{'") + 1
    if text[_skip(text, index) : _skip(text, index) + 1] == "}":
        _check_end(path, text, _skip(text, index) + 1)
        return
    seen: dict[str, int] = {}
    line_of = _LineCounter(text)
    while True:
        start = _expect(path, text, index, '"', "a quoted key")
        key, index = _decode_at(path, text, start)
        line = line_of(start)
        if key in seen:
            raise ManifestError(f"{path}:{line}: duplicate key {key!r} (first on line {seen[key]})")
        seen[key] = line
        index = _expect(path, text, index, ":", "':'") + 1
        value, index = _decode_at(path, text, _skip(text, index))
        yield line, key, value
        index = _expect(path, text, index, ",}", "',' or '}'")
        if text[index] == "}":
            _check_end(path, text, index + 1)
            return
        index += 1


def iter_csv_rows(
    path: Path, text: str, read_header: Callable[[Path, int, list[str]], list[str]], *, empty: str
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: cell}) for each row of a CSV whose first non-blank row is the header.

    `read_header(path, line, row)` checks the header row and returns the column names. Blank rows
    are skipped; a row with another number of fields, malformed CSV, or a file without a header
    (the error `empty`) is a ManifestError naming the line.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    try:
        while True:
            line = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            if not record or record == [""]:
                continue
            if header is None:
                header = read_header(path, line, record)
                continue
            if len(record) != len(header):
                raise ManifestError(f"{path}:{line}: expected {len(header)} fields, found {len(record)}")
            yield line, dict(zip(header, record))
    except csv.Error as exc:
        raise ManifestError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    if header is None:
        raise ManifestError(empty)


def atomic_write_texts(files: dict[Path, str]) -> None:
    """Write several text files so that a failure leaves none of them half-written.

    Each file goes to a temporary sibling first; only when all are on disk are they renamed
    into place (a rename within one folder is atomic).
    """
    staged: list[tuple[Path, str]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((path, tmp))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
        for path, tmp in staged:
            os.replace(tmp, path)
    except BaseException:
        for _, tmp in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
