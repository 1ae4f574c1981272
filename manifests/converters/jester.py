"""20BN Jester v1: `jester-v1-labels.csv` + `jester-v1-{train,validation,test}.csv`.

As distributed (see ../shared/annotations/FORMAT_NOTES.md): no header lines; the labels file has
one name per line; train/validation lines are `<int id>;<label>`; test lines are `<int id>`.
Videos are frame folders `20bn-jester-v1/<id>/00001.jpg`, so the default path is `{id}` under a
root pointing at `20bn-jester-v1/`.

Class index: TRN and TSM (the code bases the temporal-reasoning heads come from) number the
classes by SORTING the names, so checkpoints and published confusion matrices use that order;
it is the default. mmaction2 instead numbers them in labels-file order (`class_order="file"`).
Ids must be integers: that catches copies with an added header line (e.g. torchstream's
`video;label`), which would otherwise become a video called `video` of class `label`.
"""

from __future__ import annotations

import re
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
from manifests.table import read_class_list
from manifests.textio import read_lines
from pipeline.errors import ConfigError, ManifestError

_ROLES = (
    ("labels", "labels.csv", "labels"),
    ("train", "train.csv", "train"),
    ("val", "validation.csv", "validation"),
    ("test", "test.csv", "test"),
)
_EXPECTED = "jester-v1-labels.csv, jester-v1-train.csv, jester-v1-validation.csv or jester-v1-test.csv"
_INT_ID = re.compile(r"[0-9]+")
_CLASS_ORDERS = ("sorted", "file")


def _read_list(path: Path, split: str, known: set[str], template: PathTemplate, out: EntryCollector) -> None:
    labelled = split != "test"
    for number, line in read_lines(path):
        where = f"{path}:{number}"
        parts = line.split(";")
        if len(parts) != (2 if labelled else 1):
            shape = "'<id>;<label>'" if labelled else "'<id>'"
            raise ManifestError(f"{where}: expected {shape}, found {line!r}")
        video_id = parts[0].strip()
        label = parts[1].strip() if labelled else None
        if not _INT_ID.fullmatch(video_id):
            raise ManifestError(
                f"{where}: video id {video_id!r} is not an integer (a header line? the official files have none)"
            )
        if label is not None and label not in known:
            raise ManifestError(f"{where}: label {label!r} is not in the labels file")
        out.add(where, video_id=video_id, path=template.render(where, id=video_id, split=split),
                label=label, split=split)


@CONVERTERS.register("jester", dataset="20BN Jester v1", files=_EXPECTED)
def convert_jester(
    sources: Sequence[Path], *, path_template: str | None = None, class_order: str = "sorted"
):
    """Jester v1 lists -> Manifest. Path template fields: {id}, {split}."""
    if class_order not in _CLASS_ORDERS:
        raise ConfigError(f"--class-order {class_order!r}: expected one of {', '.join(_CLASS_ORDERS)}")
    found = gather(sources, lambda p, explicit: role_by_name(p, explicit, _ROLES), dataset="Jester",
                   expected=_EXPECTED)
    names = read_class_list(require_one(found, "labels", sources, "Jester labels file (jester-v1-labels.csv)"))
    classes = sorted(names) if class_order == "sorted" else names
    if not any(found.get(split) for split in ("train", "val", "test")):
        raise ManifestError(f"no Jester train/validation/test list among {', '.join(map(str, sources))}")
    template = PathTemplate(path_template, "{id}", ("id", "split"))
    out = EntryCollector()
    for split in ("train", "val", "test"):
        for path in found.get(split, []):
            _read_list(path, split, set(names), template, out)
    return out.manifest(classes)
