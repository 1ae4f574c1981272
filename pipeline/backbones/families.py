"""What the library-backed backbone families share: the optional import and quiet model creation."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import warnings
from types import ModuleType

from pipeline.errors import BackboneError


def require(module: str, extra: str, name: str) -> ModuleType:
    """Import an optional library or stop with the one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackboneError(
            f"--backbone {name} needs the {module} package: pip install 'stpipe-video[{extra}]'"
        ) from None


def distribution(module: str) -> str:
    """The distribution that installs an optional library (its version says whether it is there)."""
    return {"timm": "timm", "open_clip": "open_clip_torch"}.get(module, module)


def similar(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    return f"; similar: {', '.join(close)}" if close else ""


@contextlib.contextmanager
def quiet():
    """Libraries log and warn while building (open_clip: "No pretrained weights loaded" at WARNING
    on the root logger); stpipe records what was loaded in the store instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
