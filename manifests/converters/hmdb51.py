"""HMDB51: `testTrainMulti_7030_splits/<class>_test_split<k>.txt`.

As distributed (see ../shared/annotations/FORMAT_NOTES.md): the class is the file name minus
`_test_split<k>.txt`; each line is `<video>.avi <code> ` (note the trailing space), code 1 = train,
2 = test, 0 = not used in this split (skipped). Video names contain `! # & ( ) + - ; @ [ ] ~`,
so a line is split at its LAST whitespace and nothing else is interpreted.

Given a folder, the converter takes every `*_test_split{fold}.txt` (official splits 1-3, default
1); files given one by one must all belong to one split. No class index is distributed: classes
are numbered by sorted name, as TSN and mmaction2 do. The video id is the file stem; the default
path is `{class}/{file}` under a root pointing at `hmdb51_org/`.

The group is the source video a clip was cut from: HMDB51 names a clip
`<source>_<class>_<body part>_<camera motion>_<people>_<viewpoint>_<quality>_<n>`
(`Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8` -> `Acrobacias_de_un_fenomeno`), and its
official splits keep the clips of one source together. A name not of that form gets no group.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from manifests.converters._common import CONVERTERS, EntryCollector, PathTemplate, gather
from manifests.textio import read_lines
from pipeline.errors import ConfigError, ManifestError

_NAME = re.compile(r"(?P<cls>.+)_test_split(?P<fold>[0-9]+)\.txt")
_CODES = {"1": "train", "2": "test", "0": None}
_EXPECTED = "<class>_test_split<k>.txt"
_TAGS = re.compile(r"_[a-z]_(?:cm|nm)_np[0-9]+_(?:ba|fr|le|ri)_(?:bad|goo|med)_[0-9]+$")  # the meta tags after the class


def _source(stem: str, label: str) -> str | None:
    """The source video of a clip (its name before `_<class>_<tags>`), None when the name is not of that form."""
    match = _TAGS.search(stem)
    head = stem[: match.start()] if match else ""
    return head[: -len(label) - 1] if head.endswith("_" + label) and len(head) > len(label) + 1 else None


def _role(path: Path, explicit: bool, fold: int) -> str | None:
    match = _NAME.fullmatch(path.name)
    if match is None or (not explicit and int(match["fold"]) != fold):
        return None
    return "split"


def _read_split_file(path: Path, label: str, template: PathTemplate, out: EntryCollector) -> None:
    for number, line in read_lines(path):
        where = f"{path}:{number}"
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2 or parts[1] not in _CODES:
            raise ManifestError(f"{where}: expected '<video>.avi <0|1|2>', found {line!r}")
        split = _CODES[parts[1]]
        if split is None:
            continue
        file = parts[0]
        stem = Path(file).stem
        path_text = template.render(where, **{"class": label, "file": file, "stem": stem, "split": split})
        out.add(where, video_id=stem, path=path_text, label=label, split=split, group=_source(stem, label))


@CONVERTERS.register("hmdb51", dataset="HMDB51", files=_EXPECTED)
def convert_hmdb51(sources: Sequence[Path], *, path_template: str | None = None, fold: int = 1):
    """HMDB51 split files -> Manifest. Path template fields: {class}, {file}, {stem}, {split}."""
    if fold < 1:
        raise ConfigError(f"--fold {fold}: the official splits are numbered from 1")
    files = gather(sources, lambda p, explicit: _role(p, explicit, fold), dataset="HMDB51",
                   expected=_EXPECTED).get("split", [])
    if not files:
        raise ManifestError(f"no HMDB51 *_test_split{fold}.txt files among {', '.join(map(str, sources))}")
    by_class: dict[str, Path] = {}
    folds = {path: _NAME.fullmatch(path.name)["fold"] for path in files}
    if len(set(folds.values())) > 1:
        raise ManifestError(f"HMDB51 files from different splits: {', '.join(str(p) for p in files)}")
    for path in files:
        label = _NAME.fullmatch(path.name)["cls"]
        if label in by_class:
            raise ManifestError(f"{path}: class {label!r} is given twice (also {by_class[label]})")
        by_class[label] = path
    template = PathTemplate(path_template, "{class}/{file}", ("class", "file", "stem", "split"))
    out = EntryCollector()
    classes = sorted(by_class)
    for label in classes:
        _read_split_file(by_class[label], label, template, out)
    return out.manifest(classes)
