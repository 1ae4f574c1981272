"""Fixtures of the fault suite: one launcher process per module (demo videos: ../conftest.py)."""

from __future__ import annotations

import pytest
from fault_tools import Launcher


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    runner = Launcher(tmp_path_factory.mktemp("logs"))
    yield runner
    runner.close()
