"""A moto S3 server on loopback for the tests and benchmarks that talk to s3:// stores."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

KEY, SECRET = "stpipe-test-key", "stpipe-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(log: Path, *, seconds: float = 60) -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a `python -m moto.server` subprocess; stopped on exit.
    Raises RuntimeError when it does not come up."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + seconds
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not come up: {log.read_text()[-300:]!r}")
            try:
                opener.open(endpoint, timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_bucket(endpoint: str, name: str) -> str:
    import s3fs

    s3fs.S3FileSystem(key=KEY, secret=SECRET, endpoint_url=endpoint, skip_instance_cache=True).mkdir(name)
    return name
