"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from reconciler.daemon.http import make_server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_in_thread(app: Starlette, *, header_timeout: float | None = None) -> Iterator[str]:
    """``header_timeout``: serve with the daemon's guarded protocol (slow headers closed)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    if header_timeout is not None:
        config = make_server(app, "127.0.0.1", port, header_timeout=header_timeout).config
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class StubDaemonState:
    """The daemon's state as the HTTP app sees it, for tests of the heartbeat intake: a leader
    with a reachable store, an empty fleet, a status page behind a token, no git webhook."""

    is_leader = True

    def __init__(self, fleet: str = "acme") -> None:
        self.fleet = fleet

    async def store_reachable(self) -> bool:
        return True

    def fleet_document(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "nodes": []}

    def fleet_for(self, authorization: str | None, query_token: str | None) -> dict[str, Any]:
        return self.fleet_document()

    def spec_status(self) -> dict[str, Any]:
        return {"revision": "files:abc", "spec_hash": "abc", "refused": None}

    def status_page(self, authorization: str | None, query_token: str | None) -> tuple[int, str]:
        return (401, "token required") if authorization is None else (200, "<html></html>")

    def git_webhook(self, headers: Any, body: bytes) -> tuple[int, str]:
        return 404, "off"
