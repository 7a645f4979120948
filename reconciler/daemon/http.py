"""The daemon's HTTP API (starlette, served by uvicorn).

- ``GET /healthz``: the process is alive.
- ``GET /readyz``: the store is reachable (503 otherwise); says whether this process leads, and
  which spec runs (with the last refused revision and its error, if any).
- ``GET /metrics``: Prometheus text format from the daemon's own registry.
- ``POST /v1/heartbeats``: a signed heartbeat (see ``heartbeats``); 202 when accepted.
- ``GET /v1/fleet``: the fleet view (``statusing.FleetView.to_json``).
- ``GET /v1/rotation``, ``POST /v1/complaints``: the sending platform's (``rotation``).
- ``GET /status``: the status page (HTML, read-only; see ``statuspage``).
- ``POST /v1/git/webhook``: a push notification from the git host (authenticated with the
  shared secret): fetch the followed repository now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from reconciler.core.errors import UserError
from reconciler.daemon.heartbeats import (
    HEARTBEATS_PATH,
    MAX_BODY_BYTES,
    HeartbeatBatcher,
    HeartbeatRejected,
    Rejection,
    Verifier,
    utc_from_timestamp,
)
from reconciler.daemon.metrics import CONTENT_TYPE, DaemonMetrics
from reconciler.daemon.sources import MAX_WEBHOOK_BYTES
from reconciler.daemon.statuspage import CSP as STATUS_CSP

log = logging.getLogger("reconciler.daemon.http")


class DaemonState(Protocol):
    """What the HTTP layer reads of the running daemon."""

    @property
    def is_leader(self) -> bool: ...

    async def store_reachable(self) -> bool: ...

    def spec_status(self) -> dict[str, Any]: ...

    def fleet_document(self) -> dict[str, Any]: ...

    def status_page(
        self, authorization: str | None, query_token: str | None
    ) -> tuple[int, str]: ...

    def git_webhook(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str]: ...


def create_app(
    state: DaemonState,
    metrics: DaemonMetrics,
    verifier: Verifier,
    batcher: HeartbeatBatcher,
    *,
    wall_clock: Callable[[], float] = time.time,
    lifespan_batcher: bool = True,
    extra_routes: Sequence[Route] = (),
) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reachable = await state.store_reachable()
        body = {
            "status": "ready" if reachable else "unavailable",
            "store": "reachable" if reachable else "unreachable",
            "leader": state.is_leader,
            # the running spec; a refused revision (it did not load, or a guard refused its
            # plan) leaves the running spec in force: still ready, with the error shown
            "spec": state.spec_status(),
        }
        return JSONResponse(body, status_code=200 if reachable else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def fleet(request: Request) -> Response:
        # built off the event loop: a 10,000-node view must not stall heartbeat ingestion
        return JSONResponse(await asyncio.to_thread(state.fleet_document))

    async def status(request: Request) -> Response:
        # rendered off the event loop: 10,000 rows must not stall heartbeat ingestion
        code, body = await asyncio.to_thread(
            state.status_page,
            request.headers.get("authorization"),
            request.query_params.get("token"),
        )
        headers = {
            "Content-Security-Policy": STATUS_CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="fleet-reconciler status"'
        if code != 200:
            return Response(body + "\n", status_code=code, media_type="text/plain", headers=headers)
        return HTMLResponse(body, headers=headers)

    async def git_webhook(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_WEBHOOK_BYTES:
                return JSONResponse({"error": "body too large"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        code, message = state.git_webhook(headers, body)
        key = "status" if code < 400 else "error"
        return JSONResponse({key: message}, status_code=code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if lifespan_batcher:
            batcher.start()
        try:
            yield
        finally:
            if lifespan_batcher:
                await batcher.aclose()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(HEARTBEATS_PATH, HeartbeatEndpoint(metrics, verifier, batcher, wall_clock)),
            Route("/v1/fleet", fleet, methods=["GET"]),
            *extra_routes,
            Route("/status", status, methods=["GET"]),
            Route("/v1/git/webhook", git_webhook, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def _json_bytes(document: dict[str, str]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


_ACCEPTED = _json_bytes({"status": "accepted"})
_REFUSALS = {reason: _json_bytes({"error": reason.value}) for reason in Rejection}


class HeartbeatEndpoint:
    """``POST /v1/heartbeats`` as a bare ASGI app: the hot path of the daemon (thousands of
    beats a second), so no Request/Response objects, no URL parsing, pre-rendered answers."""

    def __init__(
        self,
        metrics: DaemonMetrics,
        verifier: Verifier,
        batcher: HeartbeatBatcher,
        wall_clock: Callable[[], float],
    ) -> None:
        self._metrics = metrics
        self._verifier = verifier
        self._batcher = batcher
        self._wall = wall_clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _answer(send, 405, _json_bytes({"error": "method not allowed"}), allow=True)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > MAX_BODY_BYTES:
                self._refused(Rejection.TOO_LARGE)
                await _answer(send, 413, _REFUSALS[Rejection.TOO_LARGE])
                return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        now = self._wall()
        try:
            payload = self._verifier.verify(headers, "POST", scope["path"], body, now)
        except HeartbeatRejected as exc:
            self._refused(exc.reason)
            await _answer(send, exc.status, _REFUSALS[exc.reason])
            return
        # the beat's time is the server's receive time: node clocks may drift in the window
        if not self._batcher.offer(payload.metrics(utc_from_timestamp(now))):
            self._refused(Rejection.OVERLOADED)
            await _answer(send, 503, _REFUSALS[Rejection.OVERLOADED])
            return
        self._metrics.heartbeats_received.inc()
        await _answer(send, 202, _ACCEPTED)

    def _refused(self, reason: Rejection) -> None:
        self._metrics.heartbeats_rejected.labels(reason.value).inc()


async def _answer(send: Send, status: int, body: bytes, *, allow: bool = False) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if allow:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the daemon."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(
            f"--listen {value!r}: expected HOST:PORT", hint="e.g. --listen 127.0.0.1:8080"
        )
    return host.strip("[]") or "127.0.0.1", int(port)


def make_server(app: Starlette, host: str, port: int) -> QuietServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return QuietServer(config)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves: a taken address becomes a clear error instead of
    uvicorn's ``sys.exit`` inside the event loop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP (with proto 0, Nagle + delayed ACKs add 40 ms per answer)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="is another daemon running there? choose another --listen address",
        ) from exc
    sock.set_inheritable(True)
    return sock


async def serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run uvicorn on ``sock``; its start-up failures (``sys.exit``) become an error."""
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        raise UserError(f"the HTTP server failed to start (exit status {exc.code})") from None
    finally:
        sock.close()


async def wait_started(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    """Wait until uvicorn listens (or fail if it stopped, e.g. the port is taken)."""
    async with asyncio.timeout(10.0):
        while not server.started:
            if serving.done():
                raise UserError("the HTTP server could not start (is the --listen address in use?)")
            await asyncio.sleep(0.02)
