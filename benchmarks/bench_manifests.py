"""Manifest conversion and reading at full dataset size, next to the bare parse as baseline.

Synthetic files in the official formats, at the size of the real ones (SSv2 train: 168,913
objects; Kinetics-400 train: 246,534 rows; Jester train: 118,562 lines). For each, the time of
`convert(...)` (parsing + validation + path building) is printed beside the bare parse the usual
scripts do (`json.load` / `csv.DictReader` / `str.split`), as a median of repeats, then the time
to write and re-read the canonical CSV. Run: `.venv/bin/python benchmarks/bench_manifests.py`.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from manifests import convert, read_manifest, write_manifest  # noqa: E402

REPEATS = 3


def median_seconds(fn, *args) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_ssv2(folder: Path, n: int) -> list[Path]:
    templates = [f"Putting [something] onto [something] number {i}" for i in range(174)]
    labels = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)}
    (folder / "something-something-v2-labels.json").write_text(
        "{\n" + ",\n".join(f' {json.dumps(k)}:"{v}"' for k, v in sorted(labels.items())) + "\n}\n")
    rows = [json.dumps({"id": str(i), "label": "putting a cup onto a table", "template": templates[i % 174],
                        "placeholders": ["a cup", "a table"]}, separators=(",", ":")) for i in range(n)]
    train = folder / "something-something-v2-train.json"
    train.write_text("[\n" + ",\n".join(rows) + "\n]\n")
    return [folder / "something-something-v2-labels.json", train]


def make_kinetics(folder: Path, n: int) -> list[Path]:
    path = folder / "kinetics-400_train.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
        for i in range(n):
            writer.writerow([f"class number {i % 400}", f"{i:011d}", i % 300, i % 300 + 10, "train", 0])
    return [path]


def make_jester(folder: Path, n: int) -> list[Path]:
    names = [f"Gesture {i}" for i in range(27)]
    (folder / "jester-v1-labels.csv").write_text("".join(f"{x}\n" for x in names))
    (folder / "jester-v1-train.csv").write_text("".join(f"{i};{names[i % 27]}\n" for i in range(n)))
    return [folder / "jester-v1-labels.csv", folder / "jester-v1-train.csv"]


def bare_json(files: list[Path]) -> None:
    data = json.loads(files[1].read_text())
    {o["id"]: o["template"].replace("[", "").replace("]", "") for o in data}


def bare_csv(files: list[Path]) -> None:
    with open(files[0], newline="") as handle:
        list(csv.DictReader(handle))


def bare_split(files: list[Path]) -> None:
    [line.split(";") for line in files[1].read_text().splitlines()]


def main() -> None:
    cases = [
        ("ssv2 train", "ssv2", make_ssv2, 168_913, bare_json, "json.load"),
        ("kinetics-400 train", "kinetics", make_kinetics, 246_534, bare_csv, "csv.DictReader"),
        ("jester train", "jester", make_jester, 118_562, bare_split, "str.split"),
    ]
    print(f"{'file':<20} {'rows':>8} {'convert s':>10} {'bare parse s':>13} {'ratio':>6} "
          f"{'write csv s':>12} {'read csv s':>11}   (median of {REPEATS})")
    with tempfile.TemporaryDirectory() as tmp:
        for title, name, make, n, bare, bare_name in cases:
            folder = Path(tmp) / name
            folder.mkdir()
            files = make(folder, n)
            t_convert = median_seconds(convert, name, files)
            t_bare = median_seconds(bare, files)
            manifest = convert(name, files)
            out = folder / "out.csv"
            t_write = median_seconds(write_manifest, manifest, out)
            t_read = median_seconds(read_manifest, out)
            assert len(read_manifest(out)) == n
            print(f"{title:<20} {n:>8} {t_convert:>10.2f} {t_bare:>13.2f} {t_convert / t_bare:>6.1f} "
                  f"{t_write:>12.2f} {t_read:>11.2f}   (bare = {bare_name})")


if __name__ == "__main__":
    main()
