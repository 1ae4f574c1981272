"""Typed errors. `cli.py` turns every StpipeError into one clean line and its exit code."""


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
