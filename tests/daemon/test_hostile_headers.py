"""Non-ASCII digits and non-UTF-8 bytes in every header of every endpoint of the real daemon's
HTTP app (issue 10), sent as raw bytes over a socket (no client library to tidy them up).

Every header the server or a handler reads (the heartbeat's three, ``Content-Length``,
``Content-Type``, ``Authorization``, the webhook's signature, ``Host``, ``Transfer-Encoding``,
``Retry-After``-like numbers) and a few it does not, on every route including the sending
platform's: each request is answered below 500 (or the connection is closed by the protocol
layer), nothing logs a traceback or an error, and the daemon keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route

from reconciler.daemon.http import create_app, make_server
from reconciler.daemon.rotation import create_handlers
from reconciler.daemon.running import Daemon
from tests.daemon.serving import free_port
from tests.daemon.test_running import make_world

#: Unicode digits that str.isdigit() accepts (Arabic-Indic, superscript, fullwidth, circled),
#: a digit string with one of them inside, Latin-1 bytes that are not UTF-8, and UTF-8 letters
VALUES: tuple[bytes, ...] = (
    "\u0661\u0662\u0663".encode(),
    "\u00b2".encode(),
    "\uff11\uff12".encode(),
    ("1" + "\u0663").encode(),
    "\u2460".encode(),
    b"\xb2",
    b"\xff\xfe12",
    "Bearer \u0661\u0662".encode(),
    "caf\u00e9".encode(),
)
HEADERS = (
    "X-Reconciler-Node",
    "X-Reconciler-Timestamp",
    "X-Reconciler-Signature",
    "Content-Length",
    "Content-Type",
    "Authorization",
    "X-Hub-Signature-256",
    "X-Platform-Token",
    "Host",
    "Transfer-Encoding",
    "Accept",
    "Cookie",
    "X-Forwarded-For",
    "Retry-After",
)
ENDPOINTS = (
    ("POST", "/v1/heartbeats"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/fleet"),
    ("GET", "/status"),
    ("POST", "/v1/git/webhook"),
    ("GET", "/v1/rotation"),
    ("POST", "/v1/complaints"),
)


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture
def errors() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def request(port: int, method: str, path: str, header: str, value: bytes) -> int | None:
    """Send one raw request; the status answered, or None when the connection was closed
    without an answer (the protocol layer refused it)."""
    body = b'{"node": "acme-dallas-001"}'
    lines = [f"{method} {path} HTTP/1.1".encode()]
    if header != "Host":
        lines.append(b"Host: 127.0.0.1")
    if header != "Content-Length":
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(header.encode() + b": " + value)
    lines.append(b"Connection: close")
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].split()
    return int(status_line[1])


def rejections(daemon: Daemon) -> float:
    """Refusals counted so far: by the heartbeat intake, or by the protocol layer."""
    total = 0.0
    for family in daemon.metrics.registry.collect():
        if family.name in ("reconciler_heartbeats_rejected", "reconciler_http_requests_rejected"):
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


@contextlib.contextmanager
def served(daemon: Daemon) -> Iterator[int]:
    """The daemon's app on the daemon's own server (guarded protocol, counted refusals)."""
    rotation, complaints = create_handlers(daemon, daemon._platform_token)
    app = create_app(
        daemon,
        daemon.metrics,
        daemon.verifier,
        daemon.batcher,
        extra_routes=[
            Route("/v1/rotation", rotation, methods=["GET"]),
            Route("/v1/complaints", complaints, methods=["POST"]),
        ],
    )
    port = free_port()
    server = make_server(app, "127.0.0.1", port, metrics=daemon.metrics)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_unicode_digits_and_non_utf8_in_every_header_of_every_endpoint(
    tmp_path: Path, errors: Errors
) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon
    asyncio.run(daemon._job_sweep())
    answered: dict[int | None, int] = {}
    started = time.monotonic()
    with served(daemon) as port:
        for method, path in ENDPOINTS:
            before = rejections(daemon)
            refused = 0
            for header in HEADERS:
                for value in VALUES:
                    status = request(port, method, path, header, value)
                    answered[status] = answered.get(status, 0) + 1
                    assert status is None or status < 500, (method, path, header, value, status)
                    refused += status is None or status >= 400
            if path == "/v1/heartbeats":
                # every one refused (none is signed right), and every refusal counted
                assert refused == len(HEADERS) * len(VALUES)
                time.sleep(0.2)  # a refusal by the protocol layer is counted as it closes
                assert rejections(daemon) - before == refused
        assert request(port, "GET", "/healthz", "Accept", b"*/*") == 200  # still serving
    assert sum(answered.values()) == len(ENDPOINTS) * len(HEADERS) * len(VALUES)
    assert not errors.records, [r.getMessage() for r in errors.records][:5]
    print(f"{sum(answered.values())} requests in {time.monotonic() - started:.1f} s: {answered}")
