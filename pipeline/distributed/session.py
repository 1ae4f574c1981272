"""Ray start-up and connection: an embedded local Ray for this run, or a running cluster to join."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from pipeline.errors import ConfigError, StpipeError


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a core dependency
        raise StpipeError("ray is not installed; pip install 'ray[default]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str = "", *, num_cpus: int | None = None, num_gpus: int | None = None,
                dashboard: bool = False) -> Iterator[Any]:
    """Join `address` (auto or HOST:PORT), or start an embedded local Ray for this run.

    The embedded Ray has no dashboard unless `dashboard` (then on 127.0.0.1 only) and uses token
    authentication (Ray's default unless RAY_AUTH_MODE=disabled). Its own gRPC servers still
    listen on all interfaces: Ray 2.60 turns a loopback
    node address into the machine's IP and has no loopback-only switch, so the session token
    (~/.ray/auth_token) is what keeps other hosts out (tests/faults/test_security.py records this).
    An already initialised Ray (e.g. a test's cluster) is used as it is and left running.
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": dashboard, "logging_level": "WARNING",
                              "configure_logging": True, "log_to_driver": True}
    if address:
        _check_reachable(address)
        kwargs["address"] = address
        # Object-store credentials of the driver travel with the job, so workers reach the same store.
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_APPLICATION_CREDENTIALS"))}
        if env:
            kwargs["runtime_env"] = {"env_vars": env}
    else:  # embedded, sized to this machine; "local" ignores a (stale) ray_current_cluster file
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1")
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"Ray cluster at {address}" if address else "an embedded local Ray"
        raise StpipeError(f"cannot start or join {where}: {str(exc).strip().splitlines()[0][:200]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a HOST:PORT Ray address does not answer."""
    import socket

    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected auto or HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise StpipeError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); "
                          "is `ray start --head` running there?") from None
