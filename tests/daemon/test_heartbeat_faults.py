"""The heartbeat protocol under hostile input and store faults (issue 10), over HTTP against
the real app served by uvicorn on 127.0.0.1 with the daemon's guarded protocol.

- any header of any endpoint may carry non-ASCII bytes or Unicode digits: a 4xx, counted,
  never a 500 or a traceback;
- slow clients: headers and bodies have deadlines;
- implausible figures are quarantined (422, reason, metric) and never recorded;
- a 2xx beat is in the store; a store failure answers 503 + Retry-After and the beat can be
  sent again; replays are refused across daemons sharing the store and across restarts;
- the agent resends a beat of unknown outcome unchanged: no loss, no double count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.errors import StoreError
from reconciler.core.fleet import NodeStatus, RecordedNode
from reconciler.daemon.agent import Agent, Figures
from reconciler.daemon.heartbeats import (
    HEARTBEATS_PATH,
    HeartbeatBatcher,
    MasterSecret,
    Verifier,
    derive_node_secret,
    signed_headers,
)
from reconciler.daemon.http import create_app
from reconciler.daemon.metrics import DaemonMetrics
from tests.daemon.serving import StubDaemonState, serve_in_thread
from tests.fakes.store import InMemoryStore

MASTER = "test-master-secret-0123456789abcdef"
FLEET = "acme"
NODE = "acme-dallas-001"
CAPACITY_PER_MINUTE = 1000.0


class FlakyStore(InMemoryStore):
    """A store whose heartbeat writes can fail before or after they commit."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_after_commit = False

    def record_beats(self, fleet: str, beats: Any) -> list[bool]:
        outcome = super().record_beats(fleet, beats)
        if self.fail_after_commit:
            raise StoreError("connection lost while committing")
        return outcome


def make_store() -> FlakyStore:
    store = FlakyStore()
    store.upsert_node(
        RecordedNode(
            id=NODE, fleet=FLEET, name=NODE, region="dallas", plan="small", status=NodeStatus.ACTIVE
        )
    )
    return store


class Daemon:
    """One daemon's HTTP side (its own verifier, replay cache and batcher) over ``store``."""

    def __init__(self, store: InMemoryStore, **app: Any) -> None:
        self.metrics = DaemonMetrics()
        verifier = Verifier(
            MasterSecret(MASTER),
            known_node={NODE}.__contains__,
            capacity_per_minute={NODE: CAPACITY_PER_MINUTE}.get,
        )
        self.batcher = HeartbeatBatcher(store, FLEET, flush_interval=0.01)
        self.app = create_app(StubDaemonState(FLEET), self.metrics, verifier, self.batcher, **app)

    def rejected(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "reconciler_heartbeats_rejected_total", {"reason": reason}
        )
        return value or 0.0


@contextlib.contextmanager
def serving(daemon: Daemon, header_timeout: float = 10.0) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(daemon.app, header_timeout=header_timeout) as url,
        httpx.Client(base_url=url, timeout=10.0) as client,
    ):
        yield client


class Tracebacks(logging.Handler):
    """Collects every log record that carries a traceback or is an error (``records``), and
    counts the warnings (a flood of bad requests must not become a flood of log lines)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)
        elif record.levelno >= logging.WARNING:
            self.warnings += 1


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def body(**extra: Any) -> bytes:
    payload: dict[str, Any] = {
        "node": NODE,
        "cpu": 0.5,
        "memory": 0.4,
        "disk": 0.3,
        "queue_length": 12,
        "sent": 300,
        "bounces": 2,
        "complaints": 0,
        "interval_seconds": 30,
    }
    payload.update(extra)
    return json.dumps(payload).encode()


def signed(content: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return signed_headers(
        NODE, derive_node_secret(MASTER.encode(), NODE), "POST", HEARTBEATS_PATH, content, ts
    )


# --- malformed requests ----------------------------------------------------------------

HEADER_NAMES = (
    "x-reconciler-node",
    "x-reconciler-timestamp",
    "x-reconciler-signature",
    "content-type",
    "authorization",
    "x-hub-signature-256",
    "content-length-extra",
)
ENDPOINTS = (
    ("POST", HEARTBEATS_PATH),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/v1/fleet"),
    ("GET", "/status"),
    ("POST", "/v1/git/webhook"),
    ("GET", "/metrics"),
)
#: Unicode digits that str.isdigit() accepts (Arabic-Indic, superscript, fullwidth, ...)
UNICODE_DIGITS = ("\u0661\u0662\u0663", "\u00b2", "\uff11\uff12", "1\u0663", "\u2460")


def test_unicode_digits_and_non_ascii_in_every_heartbeat_header_are_4xx(
    tracebacks: Tracebacks,
) -> None:
    daemon = Daemon(make_store())
    with serving(daemon) as client:
        content = body()
        good = signed(content)
        for name in ("X-Reconciler-Node", "X-Reconciler-Timestamp", "X-Reconciler-Signature"):
            for bad in (
                *UNICODE_DIGITS,
                "caf\u00e9",
                "\u00ff" * 40,
                str(int(time.time())) + "\u00e9",
            ):
                headers = {**good, name: bad}
                raw = {k: v.encode("utf-8") for k, v in headers.items()}
                response = client.post(HEARTBEATS_PATH, content=content, headers=raw)
                assert 400 <= response.status_code < 500, (name, bad, response.status_code)
                assert bad not in response.text
        # latin-1 bytes (not UTF-8) as well
        latin = {**{k: v.encode() for k, v in good.items()}, "X-Reconciler-Timestamp": b"\xb2"}
        assert client.post(HEARTBEATS_PATH, content=content, headers=latin).status_code == 401
    assert daemon.rejected("bad_timestamp") >= len(UNICODE_DIGITS) + 1
    total = sum(
        daemon.rejected(r)
        for r in ("bad_timestamp", "unknown_node", "bad_signature", "missing_headers")
    )
    assert total >= 3 * 8
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]
    assert tracebacks.warnings <= 3


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    header=st.sampled_from(HEADER_NAMES),
    value=st.binary(min_size=1, max_size=64).filter(
        lambda b: b"\r" not in b and b"\n" not in b and b"\x00" not in b
    ),
    payload=st.one_of(st.binary(max_size=512), st.just(b"{"), st.just(b'{"node": 1e999}')),
)
def test_no_request_reaches_a_500_or_a_traceback(
    served: tuple[Daemon, httpx.Client],
    tracebacks: Tracebacks,
    endpoint: tuple[str, str],
    header: str,
    value: bytes,
    payload: bytes,
) -> None:
    _daemon, client = served
    method, path = endpoint
    value = value.strip(b" \t") or b"x"
    try:
        response = client.request(method, path, content=payload, headers={header: value})
    except (httpx.RemoteProtocolError, httpx.LocalProtocolError):
        return  # refused at the HTTP layer (by the server, or already by the client): fine
    assert response.status_code < 500, (method, path, header, value, response.status_code)
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Daemon, httpx.Client]]:
    daemon = Daemon(make_store())
    with serving(daemon) as client:
        yield daemon, client


def test_bad_json_and_huge_bodies_are_refused_and_counted(tracebacks: Tracebacks) -> None:
    daemon = Daemon(make_store())
    with serving(daemon) as client:
        for content in (b"{not json", b"[]", b'{"node": "' + b"x" * 100 + b'"}', b"\xff\xfe"):
            response = client.post(HEARTBEATS_PATH, content=content, headers=signed(content))
            assert response.status_code == 422
        huge = b"{" + b" " * 2_000_000 + b"}"
        response = client.post(HEARTBEATS_PATH, content=huge, headers=signed(huge))
        assert response.status_code == 413
        assert client.get("/healthz").status_code == 200
    assert daemon.rejected("bad_body") == 4
    assert daemon.rejected("too_large") == 1
    assert not tracebacks.records


def test_slow_headers_are_cut_off_and_slow_bodies_answered_408() -> None:
    daemon = Daemon(make_store(), body_timeout=0.5)
    with serve_in_thread(daemon.app, header_timeout=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        # headers trickled and never finished: the connection is closed
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/heartbeats HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            sock.settimeout(5)
            assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 3
        # headers complete, body announced but never sent: 408
        for path in (HEARTBEATS_PATH, "/v1/git/webhook"):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode()
                )
                sock.settimeout(5)
                answer = sock.recv(4096)
                assert answer.startswith(b"HTTP/1.1 408"), answer
        # a normal request on a fresh connection still works
        with httpx.Client(base_url=url) as client:
            assert client.get("/healthz").status_code == 200
    assert daemon.rejected("slow_client") == 1
    slow = daemon.metrics.registry.get_sample_value(
        "reconciler_http_requests_rejected_total", {"reason": "slow_client"}
    )
    assert slow == 1


# --- plausibility ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        ({"sent": 1_000_000_000}, "implausible"),  # 10^9 in 30 s on a 1,000/min node
        ({"sent": 10, "interval_seconds": 0.001}, "bad_body"),  # interval under a second
        ({"interval_seconds": 0}, "bad_body"),
        ({"cpu": float("nan")}, "bad_body"),
        ({"queue_length": 10**8}, "bad_body"),
        ({"sent": 100_000, "interval_seconds": 1}, "implausible"),
        ({"complaints": 5000, "sent": 1}, "implausible"),
    ],
)
def test_implausible_figures_are_quarantined_and_never_recorded(
    figures: dict[str, Any], reason: str
) -> None:
    store = make_store()
    daemon = Daemon(store)
    with serving(daemon) as client:
        content = json.dumps(json.loads(body()) | figures).encode()
        response = client.post(HEARTBEATS_PATH, content=content, headers=signed(content))
        assert response.status_code == 422
        assert response.json() == {"error": reason}
        # a plausible beat still goes through
        ok = body(sent=1000)
        assert (
            client.post(
                HEARTBEATS_PATH, content=ok, headers=signed(ok, int(time.time()) + 1)
            ).status_code
            == 202
        )
    assert daemon.rejected(reason) == 1
    quarantined = daemon.metrics.registry.get_sample_value(
        "reconciler_heartbeats_quarantined_total"
    )
    assert quarantined == (1 if reason == "implausible" else 0)
    assert [b.sent for b in store.metrics[(FLEET, NODE)]] == [1000]


# --- durable or refused; replays --------------------------------------------------------


def test_a_2xx_beat_is_in_the_store_and_a_store_failure_answers_503_until_resent() -> None:
    store = make_store()
    daemon = Daemon(store)
    with serving(daemon) as client:
        content = body(sent=7)
        headers = signed(content)
        store.fail_heartbeats = StoreError("database is down")
        response = client.post(HEARTBEATS_PATH, content=content, headers=headers)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert (FLEET, NODE) not in store.metrics
        store.fail_heartbeats = None
        # the very same beat again (the agent resends it unchanged): recorded now
        response = client.post(HEARTBEATS_PATH, content=content, headers=headers)
        assert response.status_code == 202
        assert [b.sent for b in store.metrics[(FLEET, NODE)]] == [7]  # in the store already
        assert client.post(HEARTBEATS_PATH, content=content, headers=headers).status_code == 409
    assert daemon.rejected("store_unavailable") == 1
    assert daemon.rejected("replayed") == 1


def test_a_write_that_never_answers_is_503_within_the_deadline() -> None:
    store = make_store()

    class Frozen(FlakyStore):
        def record_beats(self, fleet: str, beats: Any) -> list[bool]:
            time.sleep(2.0)  # a frozen database: the worker thread hangs
            return store.record_beats(fleet, beats)

    daemon = Daemon(Frozen(), write_deadline=0.5)
    with serving(daemon) as client:
        content = body()
        started = time.monotonic()
        response = client.post(HEARTBEATS_PATH, content=content, headers=signed(content))
        assert response.status_code == 503
        assert time.monotonic() - started < 1.5
        assert client.get("/healthz", timeout=1.0).status_code == 200


def test_replays_are_refused_across_daemons_and_restarts() -> None:
    store = make_store()
    content = body(sent=5)
    headers = signed(content)
    codes = []
    for _ in range(3):  # three daemons sharing one store, each with its own replay cache
        with serving(Daemon(store)) as client:
            codes.append(client.post(HEARTBEATS_PATH, content=content, headers=headers).status_code)
    assert codes == [202, 409, 409]
    # an older beat (signed before the recorded one) is a replay too
    older = body(sent=6)
    with serving(Daemon(store)) as client:
        stamp = int(time.time()) - 10
        assert (
            client.post(HEARTBEATS_PATH, content=older, headers=signed(older, stamp)).status_code
            == 409
        )
    assert [b.sent for b in store.metrics[(FLEET, NODE)]] == [5]


# --- the agent ---------------------------------------------------------------------------


class Counting:
    def __init__(self) -> None:
        self.total = 0

    def read(self) -> Figures:
        self.total += 10
        return Figures(0.1, 0.2, 0.3, 0, 10, 0, 0)


def test_agent_resends_a_beat_of_unknown_outcome_without_double_counting() -> None:
    store = make_store()
    daemon = Daemon(store)
    source = Counting()
    with serve_in_thread(daemon.app) as url:

        async def scenario() -> None:
            clock = [1000.0]
            agent = Agent(
                NODE,
                url,
                derive_node_secret(MASTER.encode(), NODE),
                source,
                wall_clock=lambda: time.time() + clock[0] - 1000.0,
                monotonic=lambda: clock[0],
            )
            steps = [
                ("ok", True),
                ("down", False),  # store refuses before commit: 503, kept
                ("down", False),
                ("ok", True),  # the kept beat goes through, unchanged
                ("lost", False),  # recorded, then the commit's answer is lost: 503
                ("ok", True),  # resent unchanged: 409 (already recorded), counts not resent
                ("ok", True),
            ]
            for mode, expected in steps:
                clock[0] += 30
                store.fail_heartbeats = StoreError("down") if mode == "down" else None
                store.fail_after_commit = mode == "lost"
                assert await agent.beat_once() is expected, mode
            store.fail_after_commit = False
            await agent.aclose()

        asyncio.run(scenario())
    recorded = store.metrics[(FLEET, NODE)]
    # every count read was recorded exactly once: none lost, none twice
    assert sum(b.sent for b in recorded) == source.total == 70
    stamps = [b.sent_at for b in recorded]
    assert stamps == sorted(set(stamps))  # each beat once
