"""Ray start-up and connection: an embedded local Ray for this run, or a running cluster to join."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from pipeline.errors import ConfigError, StpipeError

AUTH_MODE = "RAY_AUTH_MODE"
GCS_WAIT = "RAY_gcs_server_port_wait_time_s"


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
    authentication (Ray's default; RAY_AUTH_MODE=disabled turns it off), asked for explicitly so
    Ray does not warn about it in every run. Its own gRPC servers still listen on all interfaces:
    Ray 2.60 turns a loopback node address into the machine's IP and has no loopback-only switch,
    so the session token (~/.ray/auth_token) is what keeps other hosts out
    (tests/faults/test_security.py records this).

    Joining finds the token as Ray's own CLI does (`_token_auth_for_joining`), so the commands of
    README.md work as typed on the head node of a default `ray start --head`; a join that fails
    says in one line whether authentication, the address or a version mismatch is the likely cause.
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
        _token_auth_for_joining()
        kwargs["address"] = address
        # Object-store credentials of the driver travel with the job, so workers reach the same store.
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_APPLICATION_CREDENTIALS"))}
        if env:
            kwargs["runtime_env"] = {"env_vars": env}
    else:  # embedded, sized to this machine; "local" ignores a (stale) ray_current_cluster file
        if os.environ.get(AUTH_MODE) is None:  # Ray's default, but unasked it warns about it
            _token_mode()
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1")
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
    # Ray waits 30 s for its GCS to come up; on a loaded machine an embedded start takes longer
    slow_start = {} if address or GCS_WAIT in os.environ else {GCS_WAIT: "120"}
    os.environ.update(slow_start)
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        if address:
            raise StpipeError(join_failure(address, exc)) from None
        raise StpipeError(f"cannot start an embedded local Ray: {str(exc).strip().splitlines()[0][:200]}") from None
    finally:
        for name in slow_start:
            os.environ.pop(name, None)
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


def _token_auth_for_joining() -> None:
    """Turn token authentication on when this machine has a Ray token, as `ray start` does.

    Ray's CLI (`ray start`, scripts.py) enables token mode when RAY_AUTH_MODE is unset and a token
    is where Ray looks for one (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); `ray.init`
    does so only for address "auto". A default `ray start --head` on a machine with a token
    therefore requires it, and a driver joining by HOST:PORT without it is refused. A token sent to
    a cluster without authentication is ignored, so sending it whenever there is one is safe.
    """
    if os.environ.get(AUTH_MODE) is not None:
        return  # chosen explicitly: Ray respects it, so do we
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray without token authentication
        return
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        _token_mode()


def _token_mode() -> None:
    """RAY_AUTH_MODE=token for this process and what it starts. Ray caches its config when it is
    imported: without the refresh, `ray.init` would not make the missing token that the GCS it
    starts then requires (and dies without)."""
    os.environ[AUTH_MODE] = "token"
    try:
        from ray._raylet import Config
    except ImportError:  # a Ray without token authentication
        return
    Config.initialize("")


def join_failure(address: str, exc: BaseException) -> str:
    """Why joining `address` failed, in one line with the fix. Ray's own error is generic ("Failed
    to connect to Ray cluster at ..."); the cause is in the chain (an AuthenticationError, a
    version mismatch)."""
    texts = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 8:
        texts.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(texts)
    where = f"cannot join the Ray cluster at {address}"
    if "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
        if os.environ.get(AUTH_MODE, "").lower() == "token":
            return (f"{where}: authentication failed: this machine's Ray token is not the cluster's; copy "
                    "~/.ray/auth_token from the head node here (or set RAY_AUTH_TOKEN to it)")
        return (f"{where}: the cluster uses token authentication and this machine has no Ray token; copy "
                "~/.ray/auth_token from the head node here (or set RAY_AUTH_TOKEN to it) and set "
                "RAY_AUTH_MODE=token (docs/cluster.md)")
    if "version mismatch" in text.lower():
        detail = next((line.strip() for line in text.splitlines() if "version mismatch" in line.lower()), "")
        return (f"{where}: Ray or Python version mismatch ({detail[:200]}); install the cluster's Ray and Python "
                "versions here (`ray --version` on the head node)")
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if address == "auto":
        return (f"{where}: {first}; is `ray start --head` running on this machine (as this user, with the same "
                "TMPDIR)? Else give --ray-address HEAD_IP:PORT")
    return (f"{where}: {first}; check the address (the head's `ray start --head` prints it) and that this "
            "machine reaches every port of the cluster")
