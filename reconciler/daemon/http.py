"""The daemon's HTTP API (starlette, served by uvicorn).

- ``GET /healthz``: the process is alive (503 while its heartbeat intake is stalled).
- ``GET /readyz``: the store is reachable and the intake runs (503 otherwise); says whether
  this process leads, and which spec runs (with the last refused revision and its error, if
  any).
- ``GET /metrics``: Prometheus text format from the daemon's own registry.
- ``POST /v1/heartbeats``: a signed heartbeat (see ``heartbeats``); 202 when accepted.
- ``GET /v1/fleet``: the fleet view (``statusing.FleetView.to_json``); cost figures only for
  the cost token (``RECONCILER_COST_TOKEN``, or loopback when none is configured).
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

import httptools
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reconciler.core.errors import UserError
from reconciler.daemon.heartbeats import (
    HEARTBEATS_PATH,
    MAX_BODY_BYTES,
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HeartbeatBatcher,
    HeartbeatRejected,
    Outcome,
    Rejection,
    Verifier,
    utc_from_timestamp,
)
from reconciler.daemon.metrics import CONTENT_TYPE, DaemonMetrics
from reconciler.daemon.sources import MAX_WEBHOOK_BYTES
from reconciler.daemon.statuspage import CSP as STATUS_CSP

log = logging.getLogger("reconciler.daemon.http")

#: a client must send its request line and headers within this time (else the connection is
#: closed), and its body within BODY_TIMEOUT_SECONDS (else 408)
HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 10.0
#: how long a heartbeat waits for its batch to commit before it is answered 503
WRITE_DEADLINE_SECONDS = 5.0
#: /readyz answers 503 when the store did not answer within this time
READINESS_DEADLINE_SECONDS = 2.0
#: a stalled-looking intake is checked again after this (more than its tick period, 0.2 s)
INTAKE_RECHECK_SECONDS = 0.5
RETRY_AFTER_SECONDS = b"5"


class DaemonState(Protocol):
    """What the HTTP layer reads of the running daemon."""

    @property
    def is_leader(self) -> bool: ...

    async def store_reachable(self) -> bool: ...

    def spec_status(self) -> dict[str, Any]: ...

    def fleet_document(self) -> dict[str, Any]: ...

    def fleet_for(self, authorization: str | None, query_token: str | None) -> dict[str, Any]:
        """``GET /v1/fleet``: the fleet document, without cost figures unless the reader
        presents the cost token (or reads on loopback and no cost token is configured)."""
        ...

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
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    write_deadline: float = WRITE_DEADLINE_SECONDS,
    readiness_deadline: float = READINESS_DEADLINE_SECONDS,
) -> DaemonApp:
    async def intake_stalled() -> bool:
        """The heartbeat intake's loop has not ticked for ``batcher.stall_after`` (its task
        died, or its loop was frozen); checked again after INTAKE_RECHECK_SECONDS, so that a
        loop just resumed (SIGCONT) ticks before it is called stalled."""
        if not batcher.stalled():
            return False
        await asyncio.sleep(INTAKE_RECHECK_SECONDS)
        return batcher.stalled()

    async def healthz(request: Request) -> Response:
        if await intake_stalled():
            return JSONResponse({"status": "unhealthy", "intake": "stalled"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            async with asyncio.timeout(readiness_deadline):
                reachable = await state.store_reachable()
        except TimeoutError:
            reachable = False
        stalled = await intake_stalled()
        body = {
            "status": "ready" if reachable and not stalled else "unavailable",
            "store": "reachable" if reachable else "unreachable",
            "intake": "stalled" if stalled else "receiving",
            "leader": state.is_leader,
            # the running spec; a refused revision (it did not load, or a guard refused its
            # plan) leaves the running spec in force: still ready, with the error shown
            "spec": state.spec_status(),
        }
        return JSONResponse(body, status_code=200 if reachable and not stalled else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def fleet(request: Request) -> Response:
        # built off the event loop: a 10,000-node view must not stall heartbeat ingestion
        return JSONResponse(
            await asyncio.to_thread(
                state.fleet_for,
                request.headers.get("authorization"),
                request.query_params.get("token"),
            ),
            headers={"Cache-Control": "no-store"},
        )

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

    heartbeats = HeartbeatEndpoint(
        metrics,
        verifier,
        batcher,
        wall_clock,
        body_timeout=body_timeout,
        write_deadline=write_deadline,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if lifespan_batcher:
            batcher.start()
        try:
            yield
        finally:
            if lifespan_batcher:
                await batcher.aclose()

    app = DaemonApp(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(HEARTBEATS_PATH, heartbeats),
            Route("/v1/fleet", fleet, methods=["GET"]),
            *extra_routes,
            Route("/status", status, methods=["GET"]),
            Route("/v1/git/webhook", git_webhook, methods=["POST"]),
        ],
        lifespan=lifespan,
        middleware=[Middleware(RequestGuard, metrics=metrics, body_timeout=body_timeout)],
    )
    app.direct = {HEARTBEATS_PATH: GuardedEndpoint(heartbeats, metrics)}
    return app


class DaemonApp(Starlette):
    """The daemon's Starlette app, with the paths in ``direct`` (the heartbeat intake,
    thousands of requests a second) taken before Starlette's own layers: its exception
    middleware (which wraps every ``send``), the request guard's wrapped ``receive`` and the
    router cost more per beat than verifying it. A direct endpoint bounds its own body read
    and is wrapped in ``GuardedEndpoint`` (no traceback, every failure a counted 4xx/5xx)."""

    direct: Mapping[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.direct.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _json_bytes(document: dict[str, str]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


_ACCEPTED = _json_bytes({"status": "accepted"})
#: the signed headers as the server gives them (ASGI: lower-case names) -> their str name
_BEAT_HEADERS = {
    name.lower().encode(): name.lower()
    for name in (NODE_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
}
_REFUSALS = {reason: _json_bytes({"error": reason.value}) for reason in Rejection}


class HeartbeatEndpoint:
    """``POST /v1/heartbeats`` as a bare ASGI app: the hot path of the daemon (thousands of
    beats a second), so no Request/Response objects, no URL parsing, pre-rendered answers.

    A beat is answered 202 only once the store committed it (the batcher's group commit);
    when the store cannot take it within ``write_deadline`` the answer is 503 with
    ``Retry-After`` and the beat's signature is forgotten, so the node may send it again.

    Per request costs count here: the write deadline is the batcher's (one timer per batch,
    not one per request), and the body deadline is kept by one sweep timer per event loop
    (every quarter of ``body_timeout``, at most a second; only while bodies are being read)
    that cancels the reads found late: a request costs a dict entry, not a timer of its own
    (a loop timer and its cancellation cost more than the rest of the body read). A slow
    body is thus answered 408 between ``body_timeout`` and 1.25 times it."""

    def __init__(
        self,
        metrics: DaemonMetrics,
        verifier: Verifier,
        batcher: HeartbeatBatcher,
        wall_clock: Callable[[], float],
        *,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
        write_deadline: float = WRITE_DEADLINE_SECONDS,
    ) -> None:
        self._metrics = metrics
        self._verifier = verifier
        self._batcher = batcher
        self._wall = wall_clock
        self._body_timeout = body_timeout
        self._write_deadline = write_deadline
        self._quarantine_log = LogLimiter(60.0)
        #: body reads in progress: their task -> loop time their body is due
        self._reading: dict[asyncio.Task[Any], float] = {}
        #: reads the sweep found late (and cancelled)
        self._late: set[asyncio.Task[Any]] = set()
        self._sweep_every = min(1.0, body_timeout / 4)
        #: the sweep timer and its loop (tests may run the endpoint on several loops)
        self._sweeper: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None

    def _arm_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        sweeper = self._sweeper
        if sweeper is None or sweeper[0] is not loop or sweeper[1].cancelled():
            self._sweeper = (loop, loop.call_later(self._sweep_every, self._sweep, loop))

    def _done_reading(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._reading.pop(task, None)
            self._late.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        now = loop.time()
        for task, due in list(self._reading.items()):
            if due <= now and task.get_loop() is loop:
                del self._reading[task]
                self._late.add(task)
                task.cancel()
        if any(task.get_loop() is loop for task in self._reading):
            self._arm_sweep(loop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _answer(send, 405, _json_bytes({"error": "method not allowed"}), allow=True)
            return
        body = b""
        more = True
        task = asyncio.current_task()
        if task is not None:
            loop = task.get_loop()
            self._reading[task] = loop.time() + self._body_timeout
            self._arm_sweep(loop)
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = bool(message.get("more_body", False))
                if len(body) > MAX_BODY_BYTES:
                    self._done_reading(task)
                    self._refused(Rejection.TOO_LARGE)
                    await _answer(send, 413, _REFUSALS[Rejection.TOO_LARGE], close=True)
                    return
        except asyncio.CancelledError:
            if task is None or task not in self._late:
                raise  # cancelled from outside (shutdown): not ours to answer
            self._late.discard(task)
            task.uncancel()
            self._refused(Rejection.SLOW_CLIENT)
            await _answer(send, 408, _REFUSALS[Rejection.SLOW_CLIENT], close=True)
            return
        finally:
            self._done_reading(task)
        now = self._wall()
        try:
            # only the three signed headers are decoded (the last of repeated ones counts)
            headers = {
                _BEAT_HEADERS[name]: value.decode("latin-1")
                for key, value in scope["headers"]
                if (name := key.lower()) in _BEAT_HEADERS
            }
            beat = self._verifier.verify_beat(headers, "POST", scope["path"], body, now)
        except HeartbeatRejected as exc:
            self._refused(exc.reason)
            if exc.reason is Rejection.IMPLAUSIBLE:
                self._quarantined(headers, exc.detail)
            await _answer(send, exc.status, _REFUSALS[exc.reason], retry_after=exc.status == 503)
            return
        except Exception as exc:
            self._refused(Rejection.MALFORMED)
            _request_error_log.log(
                "malformed",
                f"heartbeat refused as malformed ({type(exc).__name__})",
                event="http.malformed",
            )
            await _answer(send, 400, _REFUSALS[Rejection.MALFORMED])
            return
        # the beat's time is the server's receive time: node clocks may drift in the window
        future = self._batcher.offer(
            beat.payload.metrics(utc_from_timestamp(now), beat.timestamp), self._write_deadline
        )
        if future is None:
            self._verifier.forget(beat)
            self._refused(Rejection.OVERLOADED)
            await _answer(send, 503, _REFUSALS[Rejection.OVERLOADED], retry_after=True)
            return
        try:
            outcome = await future  # settled by the batcher, within the write deadline
        except BaseException:
            self._verifier.forget(beat)
            raise
        if outcome is Outcome.RECORDED:
            self._verifier.settled(beat)
            self._metrics.heartbeats_received.inc()
            await _answer(send, 202, _ACCEPTED)
        elif outcome is Outcome.REPLAYED:
            self._verifier.settled(beat)
            self._refused(Rejection.REPLAYED)
            await _answer(send, 409, _REFUSALS[Rejection.REPLAYED])
        else:
            self._verifier.forget(beat)
            self._refused(Rejection.STORE_UNAVAILABLE)
            await _answer(send, 503, _REFUSALS[Rejection.STORE_UNAVAILABLE], retry_after=True)

    def _refused(self, reason: Rejection) -> None:
        self._metrics.heartbeats_rejected.labels(reason.value).inc()

    def _quarantined(self, headers: Mapping[str, str], detail: str) -> None:
        self._metrics.heartbeats_quarantined.inc()
        node = headers.get(NODE_HEADER.lower(), "")  # authentic: the signature matched
        self._quarantine_log.log(
            "implausible",  # one line a minute at most, however many nodes
            f"heartbeat of {node} quarantined: {detail}",
            event="heartbeats.implausible",
            node=node,
            reason=detail,
        )


class LogLimiter:
    """At most one warning per key per ``every`` seconds (a flood of bad requests must not
    become a flood of log lines); the lines skipped are counted in the next one."""

    def __init__(
        self, every: float, *, max_keys: int = 10_000, logger: logging.Logger | None = None
    ) -> None:
        self._log = logger or log
        self._every = every
        self._max_keys = max_keys
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, key: str, message: str, *, event: str, **fields: object) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return False
        if len(self._last) >= self._max_keys:
            self._last.clear()
            self._skipped.clear()
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        if skipped:
            message += f" ({skipped} more like it since the last line)"
        self._log.warning(message, extra={"event": event, "skipped": skipped, **fields})
        return True


_request_error_log = LogLimiter(60.0)


class _SlowClient(Exception):  # noqa: N818 (a condition of the client)
    pass


_GUARD_ANSWERS = {
    "slow_client": (408, _json_bytes({"error": "request body not received in time"})),
    "malformed": (400, _json_bytes({"error": "malformed request"})),
    "error": (500, _json_bytes({"error": "internal error"})),
}


class RequestGuard:
    """Outermost ASGI layer: no request, however malformed, reaches a traceback.

    - The body must arrive within ``body_timeout`` of the request's start (408 otherwise).
    - The heartbeat intake does not come through here (``DaemonApp.direct``): it bounds its
      own body read, and ``GuardedEndpoint`` answers its failures as this guard does.
    - An exception escaping an endpoint is answered without a traceback: 400 when the
      request could not be decoded (``UnicodeError``, ``ValueError``, ``LookupError``: bad
      encodings, bad numbers, missing keys in a body), else 500; it is counted in
      ``reconciler_http_requests_rejected_total{reason}`` and logged in one line at most
      once a minute per reason (with the traceback for ``error``: a bug of ours).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: DaemonMetrics,
        *,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = asyncio.get_running_loop().time() + self._body_timeout
        complete = False

        async def bounded() -> Message:
            nonlocal complete
            if complete:  # the body is in: waiting for a disconnect is not slow
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    message = await receive()
            except TimeoutError:
                raise _SlowClient from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        try:
            await self._app(scope, bounded, tracked_send)
        except _SlowClient:
            await self._reject("slow_client", started, send, None)
        except (UnicodeError, ValueError, LookupError) as exc:
            await self._reject("malformed", started, send, exc)
        except Exception as exc:
            await self._reject("error", started, send, exc)

    async def _reject(
        self, reason: str, started: bool, send: Send, exc: BaseException | None
    ) -> None:
        await _reject(self._metrics, reason, started, send, exc)


class GuardedEndpoint:
    """A direct endpoint (``DaemonApp.direct``) answered as ``RequestGuard`` answers: an
    exception escaping it is a counted 400 (undecodable request) or 500, never a traceback.
    The endpoint answers everything it expects itself, before any exception can escape."""

    def __init__(self, endpoint: ASGIApp, metrics: DaemonMetrics) -> None:
        self._endpoint = endpoint
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._endpoint(scope, receive, send)
        except (UnicodeError, ValueError, LookupError) as exc:
            await _reject(self._metrics, "malformed", False, send, exc)
        except Exception as exc:
            await _reject(self._metrics, "error", False, send, exc)


async def _reject(
    metrics: DaemonMetrics, reason: str, started: bool, send: Send, exc: BaseException | None
) -> None:
    metrics.requests_rejected.labels(reason).inc()
    what = type(exc).__name__ if exc is not None else "timeout"
    if reason == "error" and exc is not None:
        if _request_error_log.log(
            reason, f"request failed: {what}", event="http.error", error=what
        ):
            log.debug("request failure traceback", exc_info=exc)
    else:
        _request_error_log.log(reason, f"request refused ({reason}: {what})", event="http.refused")
    if started:
        return  # the answer is under way: the server closes the connection
    status, body = _GUARD_ANSWERS[reason]
    with contextlib.suppress(Exception):
        await _answer(send, status, body, close=True)


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    *,
    allow: bool = False,
    retry_after: bool = False,
    close: bool = False,
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if allow:
        headers.append((b"allow", b"POST"))
    if retry_after:
        headers.append((b"retry-after", RETRY_AFTER_SECONDS))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request line and headers: a
    client that opens a connection (or starts a request on a kept-alive one) and does not
    complete its headers within ``HEADER_TIMEOUT_SECONDS`` is disconnected (slowloris)."""

    header_timeout = HEADER_TIMEOUT_SECONDS
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm_header_timer()  # a new request starts on this connection
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # no WebSocket here: refused like any request the parser cannot take
            self._refuse_unparsable()
        except httptools.HttpParserError:
            self._refuse_unparsable()

    def _refuse_unparsable(self) -> None:
        """uvicorn logs a warning for each unparsable request (a flood under attack): here
        it is counted (``reconciler_http_requests_rejected_total{reason="malformed"}``) and
        logged at most once a minute."""
        self._disarm_header_timer()
        if self.on_malformed is not None:
            self.on_malformed()
        _request_error_log.log(
            "unparsable", "request refused: not valid HTTP", event="http.refused"
        )
        self.send_400_response("Invalid HTTP request received.")

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # headers done, the request runs (the body has its own deadline)
        if self.on_slow_headers is not None:
            self.on_slow_headers()
        self.transport.close()

    #: called for each connection closed for slow headers (set per server by make_server)
    on_slow_headers: Callable[[], None] | None = None
    #: called for each request the HTTP parser refused
    on_malformed: Callable[[], None] | None = None


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


def make_server(
    app: Starlette,
    host: str,
    port: int,
    *,
    metrics: DaemonMetrics | None = None,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
) -> QuietServer:
    """A server whose connections must complete their headers within ``header_timeout``;
    closed connections are counted as ``slow_client`` rejections in ``metrics``."""

    def slow() -> None:
        if metrics is not None:
            metrics.requests_rejected.labels("slow_client").inc()

    def malformed() -> None:
        if metrics is not None:
            metrics.requests_rejected.labels("malformed").inc()

    protocol = type(
        "DaemonHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout": header_timeout,
            "on_slow_headers": staticmethod(slow),
            "on_malformed": staticmethod(malformed),
        },
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        http=protocol,
        timeout_keep_alive=5,
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
