"""UCF101: `ucfTrainTestlist/` with `classInd.txt`, `trainlistNN.txt`, `testlistNN.txt`.

As distributed (see ../shared/annotations/FORMAT_NOTES.md): CRLF on every line; `classInd.txt`
is `<1-based index> <Class>`; train lines are `<Class>/<file>.avi <index>`; test lines are
`<Class>/<file>.avi` with no label, so the class always comes from the FOLDER part. That also
handles the casing quirk: folder `HandstandPushups`, files `v_HandStandPushups_gXX_cYY.avi`.
When a line has an index, it must name the same class as its folder.

Given a folder, the converter takes `trainlist0{fold}.txt` and `testlist0{fold}.txt` (official
splits 1-3, default 1); files given one by one are used as they are. Class index = classInd
order. The video id is the file stem (`v_HandStandPushups_g08_c01`); the default path is
`{class}/{file}` under a root pointing at `UCF-101/`. The group is the file name's `gGG` (`g08`):
UCF101's 25 groups (the clips `c01..c07` of a group are cut from one longer video, same actor and
background), which its official splits keep apart; a name without one gets no group.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from manifests.converters._common import CONVERTERS, EntryCollector, PathTemplate, gather, require_one
from manifests.textio import read_lines
from pipeline.errors import ConfigError, ManifestError

_EXPECTED = "classInd.txt, trainlistNN.txt or testlistNN.txt"
_GROUP = re.compile(r"_(g[0-9]+)_c[0-9]+$")  # v_<Class>_g08_c01 -> g08


def _role(path: Path, explicit: bool, fold: int) -> str | None:
    name = path.name
    if name == "classInd.txt":
        return "classes"
    if explicit:
        return "train" if name.startswith("trainlist") else "test" if name.startswith("testlist") else None
    return {f"trainlist{fold:02d}.txt": "train", f"testlist{fold:02d}.txt": "test"}.get(name)


def read_class_index(path: Path) -> list[str]:
    """Class names in classInd order; the indices must run 1..N in file order."""
    classes: list[str] = []
    for number, line in read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ManifestError(f"{path}:{number}: expected '<index> <ClassName>', found {line!r}")
        if int(parts[0]) != len(classes) + 1:
            raise ManifestError(f"{path}:{number}: index {parts[0]} out of order (expected {len(classes) + 1})")
        if parts[1] in classes:
            raise ManifestError(f"{path}:{number}: class {parts[1]!r} is listed twice")
        classes.append(parts[1])
    if not classes:
        raise ManifestError(f"{path}: empty classInd file")
    return classes


def _read_list(path: Path, split: str, classes: list[str], template: PathTemplate, out: EntryCollector) -> None:
    known = set(classes)
    for number, line in read_lines(path):
        where = f"{path}:{number}"
        parts = line.split()
        if len(parts) not in (1, 2) or parts[0].count("/") != 1:
            raise ManifestError(f"{where}: expected '<Class>/<video>.avi [<index>]', found {line!r}")
        folder, file = parts[0].split("/")
        if folder not in known:
            raise ManifestError(f"{where}: class folder {folder!r} is not in classInd.txt")
        if len(parts) == 2:
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                raise ManifestError(f"{where}: class index {parts[1]!r} is not in 1..{len(classes)}")
            if classes[int(parts[1]) - 1] != folder:
                raise ManifestError(
                    f"{where}: index {parts[1]} is {classes[int(parts[1]) - 1]!r} but the folder is {folder!r}"
                )
        stem = Path(file).stem
        path_text = template.render(where, **{"class": folder, "file": file, "stem": stem, "split": split})
        group = _GROUP.search(stem)
        out.add(where, video_id=stem, path=path_text, label=folder, split=split, group=group and group[1])


@CONVERTERS.register("ucf101", dataset="UCF101", files=_EXPECTED)
def convert_ucf101(sources: Sequence[Path], *, path_template: str | None = None, fold: int = 1):
    """UCF101 split lists -> Manifest. Path template fields: {class}, {file}, {stem}, {split}."""
    if fold < 1:
        raise ConfigError(f"--fold {fold}: the official splits are numbered from 1")
    found = gather(sources, lambda p, explicit: _role(p, explicit, fold), dataset="UCF101", expected=_EXPECTED)
    classes = read_class_index(require_one(found, "classes", sources, "UCF101 classInd.txt"))
    if not found.get("train") and not found.get("test"):
        raise ManifestError(
            f"no UCF101 trainlist{fold:02d}.txt or testlist{fold:02d}.txt among {', '.join(map(str, sources))}"
        )
    template = PathTemplate(path_template, "{class}/{file}", ("class", "file", "stem", "split"))
    out = EntryCollector()
    for split in ("train", "test"):
        for path in found.get(split, []):
            _read_list(path, split, classes, template, out)
    return out.manifest(classes)
