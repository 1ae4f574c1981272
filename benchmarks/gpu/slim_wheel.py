"""Rewrite a wheel without what it does not run: sample code, benchmarks and `*.data/` (PyNvVideoCodec's
wheel ships its FFmpeg source tarball there), for the device tool's 64 MiB carry (`make gpu-nvdec-wheel`).

Only for carrying to our own GPU host; users install the published wheel (`pip install 'stpipe-video[nvdec]'`).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

DROP = ("samples/", "benchmarks/")


def dropped(name: str) -> bool:
    return name.startswith(DROP) or ".data/" in name


def slim(path: Path) -> None:
    before = path.stat().st_size
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if dropped(info.filename):
                continue
            data = src.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):  # the files listed must be the files present
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not dropped(line.decode().split(",", 1)[0]))
            out.writestr(info, data)
    tmp.replace(path)
    print(f"{path.name}: {before / 1e6:.1f} -> {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        slim(Path(name))
