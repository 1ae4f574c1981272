"""Fixtures of the fault suite: demo videos and one launcher process per module."""

from __future__ import annotations

import pytest
from fault_tools import Launcher

from pipeline.demo_data import DemoDataConfig, generate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """20 demo videos of 6 frames, 32x32 (10 classes, train and val)."""
    out = tmp_path_factory.mktemp("demo")
    generate(DemoDataConfig(out=str(out), videos_per_class=2, frames=6, size=32))
    return out


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    runner = Launcher(tmp_path_factory.mktemp("logs"))
    yield runner
    runner.close()
