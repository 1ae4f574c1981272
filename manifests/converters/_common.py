"""Shared pieces of the converters: the registry they join, finding the official files, building
entries with the file:line they came from, and rendering `--path-template`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from manifests.schema import Manifest, VideoEntry
from pipeline.errors import ConfigError, ManifestError
from pipeline.registry import Registry

CONVERTERS: Registry[Callable[..., Manifest]] = Registry("manifest format")

# (role, suffix of the official file name, word that marks an explicitly given file)
RoleTable = Sequence[tuple[str, str, str]]


def role_by_name(path: Path, explicit: bool, table: RoleTable) -> str | None:
    """Role of an annotation file from its name.

    Files found in a folder must end like the official names (so excerpts, copies and readmes
    lying beside them are skipped); a file named explicitly only needs to contain the word.
    """
    name = path.name
    for role, suffix, word in table:
        if name.endswith(suffix) if not explicit else word in name:
            return role
    return None


def gather(
    sources: Sequence[Path], role_of: Callable[[Path, bool], str | None], *, dataset: str, expected: str
) -> dict[str, list[Path]]:
    """Sort the given files, and the files directly inside the given folders, by role."""
    if not sources:
        raise ConfigError(f"{dataset}: no annotation files given (--annotations)")
    found: dict[str, list[Path]] = defaultdict(list)
    for source in sources:
        source = Path(source)
        if source.is_dir():
            for child in sorted(source.iterdir()):
                role = role_of(child, False) if child.is_file() else None
                if role is not None:
                    found[role].append(child)
        elif source.is_file():
            role = role_of(source, True)
            if role is None:
                raise ManifestError(f"{source}: not a {dataset} annotation file (expected {expected})")
            found[role].append(source)
        else:
            raise ManifestError(f"{source}: annotation file or folder not found")
    return found


def require_one(found: dict[str, list[Path]], role: str, sources: Sequence[Path], what: str) -> Path:
    files = found.get(role, [])
    where = ", ".join(str(s) for s in sources)
    if not files:
        raise ManifestError(f"no {what} among {where}")
    if len(files) > 1:
        raise ManifestError(f"more than one {what}: {', '.join(str(f) for f in files)}")
    return files[0]


class PathTemplate:
    """`--path-template`: where each video lives under the root, e.g. `{class}/{file}`."""

    def __init__(self, template: str | None, default: str, fields: Sequence[str]):
        self.template = template if template is not None else default
        self.fields = tuple(fields)

    def render(self, where: str, **values: Any) -> str:
        try:
            return self.template.format(**values)
        except KeyError as exc:
            raise ConfigError(
                f"--path-template {self.template!r}: unknown field {{{exc.args[0]}}} "
                f"(fields: {', '.join('{' + f + '}' for f in self.fields)})"
            ) from None
        except (ValueError, IndexError, AttributeError) as exc:
            raise ManifestError(f"{where}: --path-template {self.template!r} does not fit this row ({exc})") from None


class EntryCollector:
    """Builds entries, remembering the `file:line` each came from for error messages."""

    def __init__(self) -> None:
        self.entries: list[VideoEntry] = []
        self._origin: dict[str, str] = {}

    def add(self, where: str, **fields: Any) -> VideoEntry:
        try:
            entry = VideoEntry(**fields)
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        first = self._origin.get(entry.video_id)
        if first is not None:
            raise ManifestError(f"{where}: duplicate video_id {entry.video_id!r} (first at {first})")
        self._origin[entry.video_id] = where
        self.entries.append(entry)
        return entry

    def manifest(self, classes: Sequence[str]) -> Manifest:
        known = set(classes)
        for entry in self.entries:
            if entry.label is not None and entry.label not in known:
                raise ManifestError(f"{self._origin[entry.video_id]}: label {entry.label!r} is not a known class")
        return Manifest(entries=self.entries, classes=list(classes))
