"""Shared fixtures. Tests that need ../shared/assets read STPIPE_ASSETS and skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores, several processes: keep each test process from oversubscribing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _assets() -> Path | None:
    value = os.environ.get("STPIPE_ASSETS")
    if not value:
        return None
    path = Path(value)
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """`../shared/assets` (via STPIPE_ASSETS); skips the test cleanly when absent."""
    path = _assets()
    if path is None:
        pytest.skip("STPIPE_ASSETS not set or missing; asset tests skipped")
    return path


@pytest.fixture(scope="session")
def annotations_dir() -> Path:
    """`../shared/annotations` (via STPIPE_ANNOTATIONS, else beside the assets folder)."""
    value = os.environ.get("STPIPE_ANNOTATIONS")
    path = Path(value) if value else None
    if path is None and _assets() is not None:
        path = _assets().parent / "annotations"
    if path is None or not path.is_dir():
        pytest.skip("STPIPE_ANNOTATIONS not set or missing; annotation tests skipped")
    return path


@pytest.fixture(autouse=True)
def _listing_cache(tmp_path, monkeypatch):
    """Listings (`stpipe heads`, ...) cache in the test's own folder, never the user's."""
    monkeypatch.setenv("STPIPE_CACHE_DIR", str(tmp_path / "stpipe-cache"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """20 demo videos of 6 frames, 32x32 (10 classes, train and val): the folder with manifest.csv."""
    from pipeline.demo_data import DemoDataConfig, generate

    out = tmp_path_factory.mktemp("demo")
    generate(DemoDataConfig(out=str(out), videos_per_class=2, frames=6, size=32))
    return out


@pytest.fixture
def stpipe(capsys):
    """Run `stpipe ARGS` in-process: (exit code, stdout, stderr). Arguments may be paths."""
    from cli import main

    def run(args) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
