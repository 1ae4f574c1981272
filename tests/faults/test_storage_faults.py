"""Storage faults: a file system that fills up mid-run, and chunks damaged at rest.

Full disk: a small tmpfs (mounted here; skipped where mounting is refused) is filled until only
part of what a run writes fits. The run must stop with one line `stpipe: error: <path>: no space
left on the device (...)` and exit 2, mark nothing complete that is not, keep the last good
checkpoint, and the same command must finish the job once the filler is deleted, ending where an
uninterrupted run ends.
"""

from __future__ import annotations

import re

import pytest
from fault_tools import (
    assert_identical_store,
    assert_readable,
    demo_subset,
    disk_bytes,
    error_lines,
    leave_free,
    small_disk,
)

from pipeline.extraction import ExtractConfig
from stages import extract

GOOD = ["moving_left_000", "moving_right_001", "moving_up_000", "moving_down_001", "rotating_clockwise_000",
        "zooming_in_001", "appearing_000", "disappearing_001"]
FULL = re.compile(r"^stpipe: error: (.+): no space left on the device \(.*make room and re-run the same command "
                  r"to resume\)$")


def extract_argv(manifest, store):
    return ["extract", "-m", str(manifest), "-o", str(store), "--backbone", "tiny", "--weights", "none",
            "--executor", "local", "--batch-size", "8", "--decode-threads", "2"]


@pytest.fixture(scope="module")
def manifest(demo):
    return demo_subset(demo, GOOD)


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "s.zarr"
    extract.run(ExtractConfig(manifest=str(manifest), output=str(path), backbone="tiny", weights="none",
                              executor="local", batch_size=8, decode_threads=2))
    return path


def assert_one_line(code: int, output: str, path) -> None:
    assert code == 2, output
    lines = error_lines(output)
    assert len(lines) == 1 and FULL.match(lines[0]), output
    assert FULL.match(lines[0]).group(1) == str(path)


def test_extract_on_a_full_disk_stops_in_one_line_and_resumes(launcher, manifest, reference, tmp_path):
    need = disk_bytes(reference)
    with small_disk(tmp_path / "disk", f"{4 * need // 1024 + 64}k") as disk:
        store = disk / "s.zarr"
        filler = leave_free(disk, 4 * 4096 + disk_bytes(reference / "videos") // 2)  # about half the videos fit
        code, output = launcher.run(extract_argv(manifest, store))
        assert_one_line(code, output, store)
        state = assert_readable(store)  # every video marked complete is whole
        assert 0 < state["complete"] < len(GOOD), state
        filler.unlink()  # room again: the same command finishes the job
        code, output = launcher.run(extract_argv(manifest, store))
        assert code == 0, output
        assert f"resuming: {state['complete']}/{len(GOOD)} videos already complete" in output
        assert assert_identical_store(reference, store) == {"complete": len(GOOD), "failed": 0}
