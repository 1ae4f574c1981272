"""Store URLs: local paths and any fsspec URL (`file://`, `memory://`, `s3://`, `gs://` ...).

`FeatureStore.create/open` call `resolve_url` first. It decides what zarr is handed (local paths,
and `file://` URLs as plain paths: zarr's fsspec store cannot create folders on a local
filesystem), names the optional package a protocol needs, and makes one cheap request with short
timeouts before zarr starts. Zarr fans out many concurrent requests whose failures arrive late,
after minutes of retries, and as tracebacks; the probe turns a missing credential, an unreachable
endpoint or a missing bucket into one line within seconds.

The run itself retries transient faults patiently: `RUN_OPTIONS` (below the user's storage options,
which win) picks botocore's retry policy for s3, the one place stpipe sets it. Permanent faults (403
AccessDenied, InvalidAccessKeyId, NoSuchBucket) are not retried by botocore or s3fs; `StoreIO` turns
them into one StoreError line. docs/store.md ("Object stores: retries and faults") has the
settings and why.

Credentials follow each filesystem's standard chain. For s3 that is storage options
(`{"key": ..., "secret": ..., "endpoint_url": ...}`) or botocore's environment and config files
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_S3), read by botocore itself: nothing here parses them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.errors import MissingDependencyError, StoreError, StpipeError

# protocol -> (package implementing it, how to install it)
OPTIONAL_FILESYSTEMS = {
    "s3": ("s3fs", "pip install 'stpipe-video[s3]'"),
    "s3a": ("s3fs", "pip install 'stpipe-video[s3]'"),
    "gs": ("gcsfs", "pip install gcsfs"),
    "gcs": ("gcsfs", "pip install gcsfs"),
    "az": ("adlfs", "pip install adlfs"),
    "abfs": ("adlfs", "pip install adlfs"),
    "abfss": ("adlfs", "pip install adlfs"),
}
# Object stores: the first path component is a bucket (container) that must exist beforehand.
BUCKET_PROTOCOLS = frozenset(OPTIONAL_FILESYSTEMS)
# For the probe only (options merged over the user's, then attributes set on its private filesystem
# instance): fail in seconds instead of retrying for minutes. s3fs retries on its own (`retries`
# attribute, default 5) on top of botocore's retries: off here. Three attempts, as one throttled or
# dropped request must not fail a run on a flaky store (permanent errors are never retried).
PROBE_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {"config_kwargs": {"connect_timeout": 3, "read_timeout": 10,
                             "retries": {"mode": "standard", "total_max_attempts": 3}}},
}
PROBE_ATTRIBUTES: dict[str, dict[str, Any]] = {"s3": {"retries": 1}}
# For the run (the user's storage options merged over these): botocore's "standard" retry mode
# retries 500/502/503/504, throttling (503 SlowDown), connection errors and timeouts with jittered
# exponential backoff (up to 20 s a wait) and stops retrying when a client's retry quota runs dry (a
# sustained outage fails instead of crawling); botocore's default ("legacy") has no quota and 5
# attempts, and "adaptive" throttled a whole run 24x after random faults. s3fs retries SlowDown,
# dropped connections and timeouts again (5 rounds, waits under 1 s) around each botocore call.
# Measured by benchmarks/bench_s3_faults.py (RELIABILITY.md, section 8).
RUN_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {"config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 10}}},
}
for _table in (PROBE_OPTIONS, PROBE_ATTRIBUTES, RUN_OPTIONS):
    _table["s3a"] = _table["s3"]

_S3_CREDENTIALS = ("pass --storage-options '{\"key\": ..., \"secret\": ...}' "
                   "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
# exception class name -> what to tell the user ({0} is the original message)
_HINTS = {
    "NoCredentialsError": "no credentials found: " + _S3_CREDENTIALS,
    "PartialCredentialsError": "incomplete credentials ({0}): " + _S3_CREDENTIALS,
    "EndpointConnectionError": "cannot connect ({0}); check endpoint_url / AWS_ENDPOINT_URL",
    "ConnectTimeoutError": "connection timed out ({0}); check endpoint_url / AWS_ENDPOINT_URL",
    "ReadTimeoutError": "the endpoint did not answer in time ({0})",
    "PermissionError": "access denied ({0}); check the credentials and the bucket's permissions",
}
_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# packages whose exceptions (or whose exceptions' causes) are a remote store's errors
_REMOTE_PACKAGES = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "gcsfs", "adlfs", "azure",
                              "google"})


def protocol_of(url: str) -> str:
    """`s3` for `s3://b/x.zarr`; `file` for local paths (the last link of a `a::b::c` chain counts)."""
    match = _PROTOCOL.match(url.split("::")[-1])
    return match.group(1).lower() if match else "file"


def is_local(url: str) -> bool:
    return protocol_of(url) in ("file", "local") and "::" not in url


def absolute(path: str) -> str:
    """A local path made absolute (`~` expanded, `..` folded) against this process's working directory;
    "" and URLs (`s3://`, `file://`, `memory://`, `a::b` chains) unchanged. The driver calls it on every
    path it hands to Ray workers, whose working directory is not the driver's (`ray start`'s, a Ray
    Train trial's)."""
    if not path or _PROTOCOL.match(path) or "::" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def relative(url: str) -> str:
    """A local store named from this process's working directory (`demo/features.zarr`, not the
    absolute path), as reports and plots show it; URLs unchanged."""
    if not url or not is_local(url):
        return url
    return os.path.relpath(absolute(local_path(url)))


def local_path(url: str) -> str:
    """`file:///a/b.zarr` -> `/a/b.zarr`; a plain path is returned unchanged."""
    match = _PROTOCOL.match(url)
    return url[match.end():] if match else url


def resolve_url(url: str, storage_options: Mapping[str, Any] | None, *, creating: bool
                ) -> tuple[str, dict[str, Any] | None]:
    """What to hand `zarr.open_group(store=..., storage_options=...)` for `url`, after a reachability probe.

    Raises MissingDependencyError when the protocol's package is not installed, and StoreError
    (one line) for bad options, missing credentials, an unreachable endpoint, a missing bucket, or
    (when not `creating`) a store that does not exist.
    """
    if is_local(url):
        return local_path(url), None  # local paths take no storage options
    protocol = protocol_of(url)
    options = copy.deepcopy(_merge(RUN_OPTIONS.get(protocol, {}), storage_options or {}))  # botocore edits `retries`
    fs, path = _filesystem(url, _merge(options, PROBE_OPTIONS.get(protocol, {})))
    for name, value in PROBE_ATTRIBUTES.get(protocol, {}).items():
        setattr(fs, name, value)  # a private instance (skip_instance_cache): the run's filesystem keeps its own
    _probe(url, fs, path, protocol, creating=creating)
    return url, options


def _filesystem(url: str, options: dict[str, Any]):
    import fsspec

    protocol = protocol_of(url)
    try:
        return fsspec.url_to_fs(url, skip_instance_cache=True, **options)
    except ImportError:
        package, install = OPTIONAL_FILESYSTEMS.get(protocol, (f"an fsspec implementation of {protocol}://", ""))
        raise MissingDependencyError(
            f"{url}: {protocol}:// store URLs need the optional package {package}"
            + (f" ({install})" if install else "")) from None
    except ValueError as exc:  # fsspec: unknown protocol
        raise StoreError(f"{url}: {explain(exc)}") from None
    except TypeError as exc:  # an option the filesystem does not take
        raise StoreError(f"{url}: bad --storage-options for {protocol}:// ({explain(exc)})") from None


def _probe(url: str, fs, path: str, protocol: str, *, creating: bool) -> None:
    try:
        fs.info(path)
        return
    except FileNotFoundError:
        pass
    except TypeError as exc:  # s3fs hands unknown options to the session, which rejects them here
        raise StoreError(f"{url}: bad --storage-options for {protocol}:// ({explain(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, gcsfs ... raise their own types
        raise StoreError(f"{url}: cannot reach store: {explain(exc)}") from None
    if not creating:
        raise StoreError(f"{url}: no feature store here")
    if protocol in BUCKET_PROTOCOLS:
        bucket = path.strip("/").split("/")[0]
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise StoreError(f"{url}: bucket {bucket!r} does not exist; create it first") from None
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{url}: cannot reach bucket {bucket!r}: {explain(exc)}") from None


@contextlib.contextmanager
def store_errors(url: str) -> Iterator[None]:
    """A remote store's error raised in the block becomes one StoreError line naming `url`: botocore's
    and aiohttp's, and s3fs's translations of them (PermissionError for a 403, FileNotFoundError for
    NoSuchBucket), which zarr raises as they come. Every other error passes unchanged."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, StpipeError) or not _remote(exc):
            raise
        raise StoreError(f"{url}: {explain(exc)}") from None


def _remote(exc: BaseException | None) -> bool:
    while exc is not None:
        if type(exc).__module__.split(".")[0] in _REMOTE_PACKAGES:
            return True
        exc = exc.__cause__
    return False


def explain(exc: BaseException) -> str:
    """One line for a filesystem error, with a hint for the common credential/endpoint mistakes."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    for cls in type(exc).__mro__:
        if cls.__name__ in _HINTS:
            return _HINTS[cls.__name__].replace("{0}", text)
    return text


def _merge(options: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` over `options`, merging nested dicts one level (e.g. s3fs `config_kwargs`)."""
    out = dict(options)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
