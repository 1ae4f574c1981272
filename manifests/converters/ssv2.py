"""Something-Something v2: `*-labels.json` + `*-{train,validation,test}.json`.

As distributed (see ../shared/annotations/FORMAT_NOTES.md): the labels file maps each class name
to its index as a STRING (`"Approaching something with your camera":"0"`); the lists are JSON
arrays of objects `{"id", "label", "template", "placeholders"}` with `id` a string; the test list
has ids only. LF (2019 copy) and CRLF (2025 re-release) are both read.

The class of an object is its `template` with every `[` and `]` deleted (`[Something] falling
like a rock` -> `Something falling like a rock`); the free-text `label` is ignored. The class
index is the labels-file value. Videos are `20bn-something-something-v2/<id>.webm` (default path
`{id}.webm`); for extracted frame folders use e.g. `--path-template {id}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from manifests.converters._common import (
    CONVERTERS,
    EntryCollector,
    PathTemplate,
    gather,
    require_one,
    role_by_name,
)
from manifests.textio import iter_json_array, iter_json_members, read_text
from pipeline.errors import ManifestError

_ROLES = (
    ("labels", "labels.json", "labels"),
    ("train", "train.json", "train"),
    ("val", "validation.json", "validation"),
    ("test", "test.json", "test"),
)
_EXPECTED = "something-something-v2-{labels,train,validation,test}.json"


def read_labels(path: Path) -> list[str]:
    """Class names ordered by their index in the labels file; indices must be 0..N-1 once each."""
    by_index: dict[int, tuple[str, int]] = {}
    for line, name, value in iter_json_members(path, read_text(path)):
        where = f"{path}:{line}"
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not text.isdigit():
            raise ManifestError(f"{where}: class {name!r} has index {value!r}, expected a number")
        index = int(text)
        if index in by_index:
            raise ManifestError(f"{where}: index {index} is used twice (also line {by_index[index][1]})")
        by_index[index] = (name, line)
    if not by_index:
        raise ManifestError(f"{path}: the labels file is empty")
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        raise ManifestError(f"{path}: class indices are not 0..{len(by_index) - 1} (index {missing[0]} missing)")
    return [by_index[i][0] for i in range(len(by_index))]


def template_to_class(template: str) -> str:
    """`Putting [something] on [somewhere]` -> `Putting something on somewhere`."""
    return template.replace("[", "").replace("]", "")


def _read_list(path: Path, split: str, known: set[str], template: PathTemplate, out: EntryCollector) -> None:
    for line, item in iter_json_array(path, read_text(path)):
        where = f"{path}:{line}"
        if not isinstance(item, dict) or "id" not in item:
            raise ManifestError(f"{where}: expected an object with an \"id\", found {str(item)[:60]!r}")
        video_id = item["id"]
        if isinstance(video_id, int) and not isinstance(video_id, bool):
            video_id = str(video_id)
        label = None
        if split != "test":
            if not isinstance(item.get("template"), str):
                raise ManifestError(f"{where}: object {video_id!r} has no \"template\"")
            label = template_to_class(item["template"])
            if label not in known:
                raise ManifestError(
                    f"{where}: template {item['template']!r} -> {label!r} is not in the labels file"
                )
        out.add(where, video_id=video_id, path=template.render(where, id=video_id, split=split),
                label=label, split=split)


@CONVERTERS.register("ssv2", dataset="Something-Something v2", files=_EXPECTED)
def convert_ssv2(sources: Sequence[Path], *, path_template: str | None = None):
    """Something-Something v2 JSON lists -> Manifest. Path template fields: {id}, {split}."""
    found = gather(sources, lambda p, explicit: role_by_name(p, explicit, _ROLES),
                   dataset="Something-Something v2", expected=_EXPECTED)
    classes = read_labels(require_one(found, "labels", sources, "Something-Something v2 labels file"))
    if not any(found.get(split) for split in ("train", "val", "test")):
        raise ManifestError(f"no Something-Something v2 train/validation/test list among {', '.join(map(str, sources))}")
    template = PathTemplate(path_template, "{id}.webm", ("id", "split"))
    out = EntryCollector()
    for split in ("train", "val", "test"):
        for path in found.get(split, []):
            _read_list(path, split, set(classes), template, out)
    return out.manifest(classes)
