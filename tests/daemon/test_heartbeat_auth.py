"""Heartbeat authentication through the real starlette app, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reconciler.core.errors import UserError
from reconciler.core.fleet import NodeStatus, RecordedNode
from reconciler.daemon.heartbeats import (
    HEARTBEATS_PATH,
    HeartbeatBatcher,
    HeartbeatRejected,
    MasterSecret,
    ReplayCache,
    Verifier,
    derive_node_secret,
    signed_headers,
)
from reconciler.daemon.http import bind_socket, create_app, parse_listen
from reconciler.daemon.metrics import DaemonMetrics
from tests.daemon.serving import StubDaemonState, serve_in_thread
from tests.fakes.store import InMemoryStore

MASTER = "test-master-secret-0123456789abcdef"
FLEET = "acme"
NODES = ("acme-dallas-001", "acme-dallas-002")


@pytest.fixture
def store() -> InMemoryStore:
    store = InMemoryStore()
    for name in NODES:
        store.upsert_node(
            RecordedNode(
                id=name,
                fleet=FLEET,
                name=name,
                region="dallas",
                plan="small",
                status=NodeStatus.ACTIVE,
            )
        )
    return store


@pytest.fixture
def setup(store: InMemoryStore) -> Iterator[tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher]]:
    metrics = DaemonMetrics()
    master = MasterSecret(MASTER)
    known = set(NODES)
    verifier = Verifier(master, known_node=known.__contains__)
    batcher = HeartbeatBatcher(store, FLEET, flush_interval=0.01)
    app = create_app(StubDaemonState(FLEET), metrics, verifier, batcher)
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url) as client:
        yield client, metrics, batcher


def body(node: str, **extra: Any) -> bytes:
    payload = {
        "node": node,
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


def secret(node: str) -> str:
    return derive_node_secret(MASTER.encode(), node)


def post(
    client: httpx.Client, content: bytes, headers: dict[str, str], path: str = HEARTBEATS_PATH
) -> int:
    return client.post(path, content=content, headers=headers).status_code


def rejected(metrics: DaemonMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "reconciler_heartbeats_rejected_total", {"reason": reason}
    )
    return value or 0.0


def test_valid_beat_is_accepted_and_written(
    setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher], store: InMemoryStore
) -> None:
    client, metrics, _batcher = setup
    node = NODES[0]
    content = body(node)
    headers = signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, int(time.time()))
    assert post(client, content, headers) == 202
    deadline = time.monotonic() + 5
    while not store.metrics.get((FLEET, node)) and time.monotonic() < deadline:
        time.sleep(0.02)
    beats = store.metrics[(FLEET, node)]
    assert [(b.queue_length, b.sent, b.bounces) for b in beats] == [(12, 300, 2)]
    assert store.nodes[(FLEET, node)].last_heartbeat is not None
    assert metrics.registry.get_sample_value("reconciler_heartbeats_received_total") == 1.0


def test_stale_and_future_timestamps_are_refused(
    setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher],
) -> None:
    """Over HTTP the daemon reads its own clock a moment after the test does (and later still
    on a loaded machine), so these timestamps sit a minute beyond the window, never on its edge;
    the edges themselves are pinned with a given clock below."""
    client, metrics, _ = setup
    node = NODES[0]
    content = body(node)
    now = int(time.time())
    assert (
        post(
            client,
            content,
            signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, now - 360),
        )
        == 401
    )
    assert rejected(metrics, "stale") == 1
    assert (
        post(
            client,
            content,
            signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, now + 420),
        )
        == 401
    )
    assert rejected(metrics, "future") == 1
    # inside the window either way is fine
    assert (
        post(
            client,
            content,
            signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, now - 250),
        )
        == 202
    )


@pytest.mark.parametrize(
    ("offset", "refused"),
    [(-301, "stale"), (-300, None), (300, None), (301, "future")],
)
def test_timestamp_window_edges(offset: int, refused: str | None) -> None:
    """The window is 300 s either side of the daemon's clock, edges included."""
    node = NODES[0]
    content = body(node)
    now = 1_800_000_000
    verifier = Verifier(MasterSecret(MASTER), known_node=set(NODES).__contains__)
    headers = signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, now + offset)
    if refused is None:
        assert verifier.verify(headers, "POST", HEARTBEATS_PATH, content, now).node == node
    else:
        with pytest.raises(HeartbeatRejected) as raised:
            verifier.verify(headers, "POST", HEARTBEATS_PATH, content, now)
        assert raised.value.reason.value == refused


def test_replay_is_refused(setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher]) -> None:
    client, metrics, _ = setup
    node = NODES[0]
    content = body(node)
    headers = signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, int(time.time()))
    assert post(client, content, headers) == 202
    assert post(client, content, headers) == 409
    assert rejected(metrics, "replayed") == 1


def test_tampered_body_is_refused(
    setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher],
) -> None:
    client, metrics, _ = setup
    node = NODES[0]
    content = body(node)
    headers = signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, int(time.time()))
    assert post(client, body(node, queue_length=0), headers) == 401
    assert rejected(metrics, "bad_signature") == 1


def test_signature_moved_to_another_path_is_refused(
    setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher],
) -> None:
    client, metrics, _ = setup
    node = NODES[0]
    content = body(node)
    headers = signed_headers(node, secret(node), "POST", "/v1/other", content, int(time.time()))
    assert post(client, content, headers) == 401
    # and a signature for the heartbeat path does not work as another method either
    headers = signed_headers(node, secret(node), "PUT", HEARTBEATS_PATH, content, int(time.time()))
    assert post(client, content, headers) == 401
    assert rejected(metrics, "bad_signature") == 2


def test_wrong_node_is_refused(setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher]) -> None:
    client, metrics, _ = setup
    a, b = NODES
    now = int(time.time())
    # node a's secret, claiming to be node b
    content = body(b)
    assert (
        post(client, content, signed_headers(b, secret(a), "POST", HEARTBEATS_PATH, content, now))
        == 401
    )
    assert rejected(metrics, "bad_signature") == 1
    # node a signs correctly but reports figures for node b
    assert (
        post(client, content, signed_headers(a, secret(a), "POST", HEARTBEATS_PATH, content, now))
        == 401
    )
    assert rejected(metrics, "node_mismatch") == 1
    # a node outside the fleet, even with a correctly derived secret
    stranger = "acme-dallas-999"
    content = body(stranger)
    assert (
        post(
            client,
            content,
            signed_headers(stranger, secret(stranger), "POST", HEARTBEATS_PATH, content, now),
        )
        == 404
    )
    assert rejected(metrics, "unknown_node") == 1


def test_missing_headers_and_bad_body(
    setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher],
) -> None:
    client, metrics, _ = setup
    node = NODES[0]
    assert post(client, body(node), {"Content-Type": "application/json"}) == 401
    content = b'{"node": "acme-dallas-001", "cpu": 7}'
    headers = signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, int(time.time()))
    assert post(client, content, headers) == 422
    assert rejected(metrics, "missing_headers") == 1
    assert rejected(metrics, "bad_body") == 1


def test_other_endpoints(setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher]) -> None:
    client, _, _ = setup
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "store": "reachable",
        "intake": "receiving",
        "leader": True,
        "spec": {"revision": "files:abc", "spec_hash": "abc", "refused": None},
    }
    assert client.get("/v1/fleet").json()["fleet"] == FLEET
    text = client.get("/metrics").text
    assert "reconciler_heartbeats_received_total" in text
    assert MASTER not in text


def test_master_secret_never_shows() -> None:
    master = MasterSecret(MASTER)
    assert MASTER not in repr(master)
    assert MASTER not in str(master)
    with pytest.raises(UserError, match="RECONCILER_NODE_MASTER_SECRET"):
        MasterSecret.from_env({})
    with pytest.raises(UserError, match="too short"):
        MasterSecret("short")
    # derived per node, stable, different between nodes
    assert master.node_secret("a") == derive_node_secret(MASTER.encode(), "a")
    assert master.node_secret("a") != master.node_secret("b")


def test_replay_cache_is_bounded_and_expires() -> None:
    cache = ReplayCache(window_seconds=300, max_entries=3)
    assert cache.check_and_add(b"k1", 1000, 1000)
    assert not cache.check_and_add(b"k1", 1000, 1000)
    for i in range(5):
        cache.check_and_add(b"x%d" % i, 1000, 1000)
    assert len(cache) == 3
    assert cache.check_and_add(b"late", 1300, 1300)  # 1000 is still inside the window
    assert len(cache) == 3
    cache.check_and_add(b"later", 1301, 1301)
    assert len(cache) == 2  # the beats of t=1000 expired: a replay of them would be stale
    assert ReplayCache.key("v1=" + "ab" * 32) == bytes.fromhex("ab" * 16)


def test_listen_address_in_use_is_a_clear_error() -> None:
    first = bind_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        first.listen()
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    finally:
        first.close()
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    with pytest.raises(UserError, match="expected HOST:PORT"):
        parse_listen("8080")


def test_wrong_method_and_oversized_body(
    setup: tuple[httpx.Client, DaemonMetrics, HeartbeatBatcher],
) -> None:
    client, metrics, _ = setup
    answer = client.get(HEARTBEATS_PATH)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    node = NODES[0]
    content = b" " * 20_000
    headers = signed_headers(node, secret(node), "POST", HEARTBEATS_PATH, content, int(time.time()))
    assert post(client, content, headers) == 413
    assert rejected(metrics, "too_large") == 1


def test_accepted_connections_get_tcp_nodelay() -> None:
    """Regression: a listening socket made without IPPROTO_TCP made asyncio skip TCP_NODELAY,
    and every answer waited 40 ms for a delayed ACK."""

    async def scenario() -> int:
        seen: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            await writer.wait_closed()

        listener = bind_socket("127.0.0.1", 0)
        server = await asyncio.start_server(handle, sock=listener)
        port = listener.getsockname()[1]
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()
            await writer.wait_closed()
        return seen[0]

    assert asyncio.run(scenario()) != 0
