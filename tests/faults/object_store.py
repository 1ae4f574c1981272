"""A flaky object store for the fault suite and benchmarks/bench_s3_faults.py: a moto S3 server on
loopback with `FaultProxy`, a threaded HTTP proxy, in front of it.

The client's `endpoint_url` is the proxy's. Each request draws once from a seeded RNG and is, with
the configured probabilities, answered `503 SlowDown` or `500 InternalError` (S3's own XML), dropped
(forwarded to moto, so the write may have happened, then the connection is reset without an answer),
or stalled (no answer for `stall_seconds`, then reset: a read timeout when the client waits less);
the rest is forwarded. `deny(status, code, after=n, path=p)` answers every request, once n requests
whose path holds `p` have passed, with a permanent error (403 AccessDenied / InvalidAccessKeyId, 404
NoSuchBucket). `counts` says how many
requests came and how many of each fault were injected: each injected transient fault is one retry.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto_server import KEY, SECRET, free_port, make_bucket, moto_server  # noqa: F401 - the suite's and the benchmark's

_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}
_MESSAGES = {"SlowDown": "Please reduce your request rate.", "InternalError": "We encountered an internal error.",
             "AccessDenied": "Access Denied", "NoSuchBucket": "The specified bucket does not exist",
             "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records."}


class FaultProxy:
    """See the module docstring. `with FaultProxy(upstream, slowdown=0.1, reset=0.02) as proxy:`."""

    def __init__(self, upstream: str, *, seed: int = 0, slowdown: float = 0.0, error500: float = 0.0,
                 reset: float = 0.0, stall: float = 0.0, stall_seconds: float = 2.0):
        self.upstream = upstream.removeprefix("http://")
        self.rates = {"slowdown": slowdown, "error500": error500, "reset": reset, "stall": stall}
        self.stall_seconds = stall_seconds
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._deny: list | None = None  # [status, code, path, requests still let through]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def deny(self, status: int, code: str, *, after: int = 0, path: str = "") -> None:
        """Once `after` more requests whose path holds `path` have passed, answer every request `status` `code`."""
        with self._lock:
            self._deny = [status, code, path, after]

    def injected(self) -> int:
        """Transient faults injected so far (each is one retry of a request)."""
        return sum(self.counts[kind] for kind in self.rates)

    def _fault(self, path: str) -> str:
        with self._lock:
            self.counts["requests"] += 1
            if self._deny is not None:
                if self._deny[3] <= 0:
                    self.counts["deny"] += 1
                    return "deny"
                self._deny[3] -= self._deny[2] in path
            draw = self._rng.random()
            for kind, rate in self.rates.items():
                if draw < rate:
                    self.counts[kind] += 1
                    return kind
                draw -= rate
            return ""

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients use it
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, *args) -> None:
            pass

        def _any(self) -> None:
            body = self._body()
            fault = proxy._fault(self.path)
            if fault == "deny":
                return self._error(*proxy._deny[:2])
            if fault == "slowdown":
                return self._error(503, "SlowDown")
            if fault == "error500":
                return self._error(500, "InternalError")
            if fault == "stall":
                time.sleep(proxy.stall_seconds)
                return self._reset()
            status, reason, headers, payload = self._forward(body)
            if fault == "reset":  # applied upstream, the answer lost
                return self._reset()
            self.send_response_only(status, reason)
            for name, value in headers:
                if name.lower() not in _HOP and not (name.lower() == "content-length" and self.command != "HEAD"):
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                    if size == 0:
                        return b"".join(parts)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes):
            headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            for attempt in range(2):  # a kept-alive upstream connection moto closed: open a new one
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    self.upstream.request(self.command, self.path, body=body, headers=headers)
                    response = self.upstream.getresponse()
                    return response.status, response.reason, response.getheaders(), response.read()
                except (http.client.HTTPException, OSError):
                    self.upstream.close()
                    self.upstream = None
                    if attempt:
                        raise

        def _error(self, status: int, code: str) -> None:
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>'
                       f"{_MESSAGES.get(code, code)}</Message><RequestId>fault-proxy</RequestId></Error>").encode()
            self.send_response_only(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST, no answer
            self.close_connection = True

        def finish(self) -> None:
            with contextlib.suppress(OSError):
                super().finish()
            if self.upstream is not None:
                self.upstream.close()

    return Handler
