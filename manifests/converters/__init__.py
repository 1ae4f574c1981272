"""Converters from official dataset annotation files to a `Manifest`.

`CONVERTERS` maps a format name to one function

    convert_<format>(sources: Sequence[Path], *, <format options>) -> Manifest

`sources` are the annotation files as distributed, or folders holding them under their official
names. Each converter reads the files byte-exact (LF or CRLF, trailing spaces, quoting), maps the
dataset's splits to train/val/test, follows the dataset's own class index, and builds each
`path` from `path_template` (default: the layout the dataset is distributed in). Every error
names the annotation file and line.

| format   | class index                                   | default path                           | group (`group` column)     |
|----------|-----------------------------------------------|----------------------------------------|----------------------------|
| jester   | sorted names (TRN/TSM); `class_order="file"`   | `{id}` (frame folder)                  | none defined               |
| ssv2     | labels.json values                            | `{id}.webm`                            | none defined               |
| ucf101   | classInd.txt                                  | `{class}/{file}`                       | `g08` of `v_X_g08_c01`     |
| hmdb51   | sorted class names (no official index exists) | `{class}/{file}`                       | source video in clip name  |
| kinetics | sorted labels (no official index exists)      | `{class_dir}/{youtube_id}_{start:06d}_{end:06d}.mp4` | YouTube id |
| folder   | sorted class folder names                     | the files found                        | `<class>/<group>/` sub-folder with `group_folders=True` |

A group is what several videos share (one source video, actor and scene); the splits stpipe makes
keep it whole (`pipeline.splits`).

`convert(name, sources, **options)` checks that the options apply to that format, so the CLI
can pass its flags through without knowing which format takes which.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# importing the format modules registers their converters
from manifests.converters import folder, hmdb51, jester, kinetics, ssv2, ucf101  # noqa: F401
from manifests.converters._common import CONVERTERS
from manifests.schema import Manifest
from pipeline.errors import ConfigError


def options_of(name: str) -> list[str]:
    """The keyword options a format takes (as Python names)."""
    params = inspect.signature(CONVERTERS.get(name)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def convert(name: str, sources: Sequence[str | Path], **options: Any) -> Manifest:
    """Run converter `name` on `sources`; an option the format does not take is a ConfigError."""
    known = options_of(name)
    for option in options:
        if option not in known:
            flags = ", ".join("--" + k.replace("_", "-") for k in known) or "none"
            raise ConfigError(
                f"--{option.replace('_', '-')} does not apply to format {name!r} (its options: {flags})"
            )
    return CONVERTERS.get(name)([Path(s) for s in sources], **options)
