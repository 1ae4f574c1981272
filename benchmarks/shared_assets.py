"""Where the benchmarks find the shared clips and weights: $STPIPE_ASSETS, else ../shared/assets
beside the checkout (as the tests and the demo do); never a path of one machine."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def default_assets() -> Path:
    return Path(os.environ.get("STPIPE_ASSETS") or ROOT.parent / "shared" / "assets")
