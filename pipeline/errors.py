"""Typed errors. `cli.py` turns every StpipeError into one clean line and its exit code."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator


class StpipeError(Exception):
    """Base of every error a user can cause; the message is one line naming the culprit."""

    exit_code = 2


class ConfigError(StpipeError):
    """A config file or flag is wrong (unknown key, wrong type, bad value)."""


class RegistryError(StpipeError):
    """An unknown or duplicate name in a registry."""


class ManifestError(StpipeError):
    """A manifest or annotation file is malformed; the message names file and line."""


class VideoError(StpipeError):
    """A video or frame folder cannot be opened or decoded; the message names the file."""


class FlowError(StpipeError):
    """Bad input to optical flow (shapes, NaNs, empty batches)."""


class HeadError(StpipeError):
    """A head cannot be built or run with the given shapes."""


class BackboneError(StpipeError):
    """A backbone or its weights cannot be built or loaded."""


class StoreError(StpipeError):
    """A feature store is missing, malformed, or was made by another config."""


class RunError(StpipeError):
    """A run directory is missing or holds an incompatible run."""


class WorkerStartError(StpipeError):
    """Ray workers failed while starting (their constructor raised): the run stops before any video."""


class MissingDependencyError(StpipeError):
    """An optional dependency is not installed; the message says which extra to install."""


class PartialFailure(StpipeError):
    """A run finished but some items failed; they are recorded, the rest is done."""

    exit_code = 3


class NoSpaceError(StpipeError):
    """A write met a full file system (or a quota). What was written before stays valid and nothing
    half-written is marked done, so making room and re-running the same command resumes."""


class DamagedDataError(StoreError):
    """A stored chunk fails its checksum or does not decode (`stpipe verify` lists and repairs them)."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space(exc: BaseException | None) -> bool:
    """True when `exc` or an error it wraps (`__cause__`, `__context__`, Ray's `cause`) is ENOSPC/EDQUOT."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, NoSpaceError) or (isinstance(exc, OSError) and exc.errno in _NO_SPACE):
            return True
        exc, seen = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None), seen + 1
    return False


@contextlib.contextmanager
def full_disk_as_error(path: str) -> Iterator[None]:
    """A full disk met by the writes inside becomes one NoSpaceError naming `path` (the output the
    user gave), instead of the OSError of whichever write hit it first."""
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as exc:
        if not no_space(exc):
            raise
        raise NoSpaceError(f"{path}: no space left on the device ({_free(path)}make room and re-run the same "
                           "command to resume)") from exc


def _free(path: str) -> str:
    """'12 KiB free of 8 MiB; ' for a local path (its nearest existing folder), '' for a URL."""
    if "://" in path and not path.startswith("file://"):
        return ""
    folder = os.path.abspath(path.removeprefix("file://"))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return ""
    return f"{_size(usage.free)} free of {_size(usage.total)}; "


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" or n >= 10 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
