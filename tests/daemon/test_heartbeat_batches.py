"""Group commit on the heartbeat path changes no answer (issues 10 and 14), over HTTP against
the real app and the real store, on SQLite and PostgreSQL:

- a beat answered 202 is in the store, and only those: concurrent beats of many nodes, and
  of one node through two daemons, are each recorded once or refused;
- a store failure during a batch answers 503 + Retry-After to every beat of that batch and
  records none of them; resent, each is recorded once;
- replays are refused across two daemons on one database and across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg

from reconciler.core.fleet import NodeStatus, RecordedNode
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
from state import open_store
from tests.daemon.serving import StubDaemonState, serve_in_thread
from tests.driver_faults import failing_statements

MASTER = "test-master-secret-0123456789abcdef"
FLEET = "acme"
NODES = [f"acme-dallas-{i:03d}" for i in range(1, 13)]


class Daemon:
    """One daemon's intake (verifier, replay cache, batcher) over its own store handle."""

    def __init__(self, url: str) -> None:
        self.store = open_store(url, upgrade=True)
        self.metrics = DaemonMetrics()
        verifier = Verifier(MasterSecret(MASTER), known_node=set(NODES).__contains__)
        self.batcher = HeartbeatBatcher(self.store, FLEET, flush_interval=0.01)
        self.app = create_app(StubDaemonState(FLEET), self.metrics, verifier, self.batcher)

    def close(self) -> None:
        self.store.close()


@contextlib.contextmanager
def running(url: str) -> Iterator[tuple[Daemon, str]]:
    daemon = Daemon(url)
    try:
        with serve_in_thread(daemon.app, header_timeout=10.0) as base:
            yield daemon, base
    finally:
        daemon.close()


def seeded(url: str) -> str:
    store = open_store(url, upgrade=True)
    try:
        store.upsert_nodes(
            [
                RecordedNode(
                    id=None,
                    fleet=FLEET,
                    name=name,
                    region="dallas",
                    plan="small",
                    status=NodeStatus.ACTIVE,
                )
                for name in NODES
            ]
        )
    finally:
        store.close()
    return url


def beat(node: str, stamp: int, sent: int = 10) -> tuple[bytes, dict[str, str]]:
    content = json.dumps(
        {
            "node": node,
            "cpu": 0.5,
            "memory": 0.4,
            "disk": 0.3,
            "queue_length": 3,
            "sent": sent,
            "bounces": 0,
            "complaints": 0,
            "interval_seconds": 30,
        }
    ).encode()
    secret = derive_node_secret(MASTER.encode(), node)
    return content, signed_headers(node, secret, "POST", HEARTBEATS_PATH, content, stamp)


async def post_all(
    requests: list[tuple[str, tuple[bytes, dict[str, str]]]],
) -> list[httpx.Response]:
    """Every request at once (each its own connection), so they meet in batches."""
    async with httpx.AsyncClient(timeout=20.0) as client:
        return await asyncio.gather(
            *(
                client.post(base + HEARTBEATS_PATH, content=content, headers=headers)
                for base, (content, headers) in requests
            )
        )


def recorded(url: str) -> dict[str, list[int]]:
    """Each node's recorded beats: (sent_at is not kept per metric) their ``sent`` figures."""
    store = open_store(url)
    try:
        series = store.recent_metrics(FLEET, _epoch())
        return {name: [int(m.sent) for m in beats] for name, beats in series.items()}
    finally:
        store.close()


def _epoch() -> Any:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


def test_a_failed_batch_answers_503_to_every_beat_and_records_none(database_url: str) -> None:
    url = seeded(database_url)
    now = int(time.time())
    with running(url) as (daemon, base):
        failing = [True]
        engine = daemon.store.engine
        driver_error: type[Exception] = (
            psycopg.OperationalError
            if engine.dialect.name == "postgresql"
            else sqlite3.OperationalError
        )

        def fail() -> BaseException | None:
            return driver_error("server closed") if failing[0] else None

        with failing_statements(engine, "INSERT INTO node_metrics", fail):
            beats = [(base, beat(node, now, sent=i + 1)) for i, node in enumerate(NODES)]
            answers = asyncio.run(post_all(beats))
            assert [a.status_code for a in answers] == [503] * len(NODES)
            assert all(a.headers["retry-after"] == "5" for a in answers)
            assert daemon.batcher.stats.failed_batches >= 1
            assert daemon.batcher.stats.written == 0
            assert recorded(url) == {}  # the whole batch rolled back: nothing half-written
            failing[0] = False
            # the agents resend the very same beats: each recorded once, then a replay
            answers = asyncio.run(post_all(beats))
            assert [a.status_code for a in answers] == [202] * len(NODES)
            answers = asyncio.run(post_all(beats))
            assert [a.status_code for a in answers] == [409] * len(NODES)
    assert recorded(url) == {node: [i + 1] for i, node in enumerate(NODES)}


def test_every_202_is_recorded_once_across_two_daemons_and_a_restart(database_url: str) -> None:
    url = seeded(database_url)
    now = int(time.time()) - 100
    with running(url) as (_, first), running(url) as (_, second):
        # each node's beats one second apart, spread over both daemons, all at once: the
        # older of two beats that meet in the store may be refused; a 202 is always recorded
        requests = [
            ((first, second)[(i + k) % 2], beat(node, now + k, sent=100 * k + i))
            for k in range(3)
            for i, node in enumerate(NODES)
        ]
        answers = asyncio.run(post_all(requests))
        codes = [a.status_code for a in answers]
        assert set(codes) <= {202, 409}
        accepted = [
            json.loads(content)["sent"]
            for (_, (content, _)), code in zip(requests, codes, strict=True)
            if code == 202
        ]
        # the same beats again, each to the other daemon: every one refused
        again = [
            ((second, first)[(i + k) % 2], beat(node, now + k, sent=100 * k + i))
            for k in range(3)
            for i, node in enumerate(NODES)
        ]
        assert {a.status_code for a in asyncio.run(post_all(again))} == {409}
    series = recorded(url)
    assert sorted(s for sents in series.values() for s in sents) == sorted(accepted)
    for node in NODES:  # the newest beat of each node always wins
        assert max(series[node]) == 200 + NODES.index(node)
    # a restart (a new daemon, new replay cache): still refused; a newer beat is recorded
    with running(url) as (_, base):
        replay = asyncio.run(post_all([(base, beat(NODES[0], now + 2, sent=200))]))
        assert replay[0].status_code == 409
        newer = asyncio.run(post_all([(base, beat(NODES[0], now + 3, sent=300))]))
        assert newer[0].status_code == 202
    assert max(recorded(url)[NODES[0]]) == 300


def test_a_beat_resent_while_its_first_copy_waits_is_not_taken_for_recorded(
    database_url: str,
) -> None:
    """An agent whose request timed out resends the same beat while the daemon still waits on
    the store for the first copy. Answering that copy 409 ("replayed", which the agent takes
    for recorded) lost the beat's counts when the first copy then failed (found by the
    private-PostgreSQL fault test); it is 503 + Retry-After until the first copy settles."""
    import threading

    url = seeded(database_url)
    now = int(time.time())
    node = NODES[0]
    one = beat(node, now, sent=21)
    with running(url) as (daemon, base):
        engine = daemon.store.engine
        driver_error: type[Exception] = (
            psycopg.OperationalError
            if engine.dialect.name == "postgresql"
            else sqlite3.OperationalError
        )
        entered, release = threading.Event(), threading.Event()

        def slow_then_fail() -> BaseException | None:
            entered.set()
            release.wait(20)
            return driver_error("server closed")

        first: list[httpx.Response] = []
        with failing_statements(engine, "INSERT INTO node_metrics", slow_then_fail):
            sender = threading.Thread(
                target=lambda: first.append(
                    httpx.post(base + HEARTBEATS_PATH, content=one[0], headers=one[1], timeout=30)
                )
            )
            sender.start()
            assert entered.wait(20), "the first copy never reached the store"
            again = httpx.post(base + HEARTBEATS_PATH, content=one[0], headers=one[1], timeout=30)
            assert again.status_code == 503, again.text
            assert again.json() == {"error": "in_flight"}
            assert again.headers["retry-after"] == "5"
            release.set()
            sender.join(30)
        assert [r.status_code for r in first] == [503]
        assert recorded(url) == {}
        # resent once the store is back: recorded once, then a replay
        resent = httpx.post(base + HEARTBEATS_PATH, content=one[0], headers=one[1], timeout=30)
        assert resent.status_code == 202, resent.text
        replayed = httpx.post(base + HEARTBEATS_PATH, content=one[0], headers=one[1], timeout=30)
        assert replayed.status_code == 409
    assert recorded(url) == {node: [21]}
