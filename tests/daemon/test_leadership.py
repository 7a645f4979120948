"""Leadership on PostgreSQL through the daemon's LeaderGuard and the store's advisory lock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from reconciler.core.errors import LeadershipLostError
from reconciler.core.fleet import NodeStatus, RecordedNode
from reconciler.daemon.leadership import LeaderGuard
from reconciler.daemon.metrics import DaemonMetrics
from state.leadership import PostgresLeadership
from state.store import SqlStore, open_store

pytestmark = pytest.mark.postgres

FLEET = "acme"


@pytest.fixture
def store(fresh_postgres_url: str) -> Iterator[SqlStore]:
    store = open_store(fresh_postgres_url, upgrade=True)
    try:
        yield store
    finally:
        store.close()


def _terminate_lock_holder(url: str) -> int:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
            "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        assert len(rows) == 1, rows
        pid = int(rows[0][0])
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return pid


def _node(name: str) -> RecordedNode:
    return RecordedNode(
        id="00000000-0000-0000-0000-000000000001",
        fleet=FLEET,
        name=name,
        region="dallas",
        plan="small",
        status=NodeStatus.ACTIVE,
    )


def test_one_leads_and_termination_stops_mutations_before_the_takeover(
    fresh_postgres_url: str, store: SqlStore
) -> None:
    a = PostgresLeadership(fresh_postgres_url, FLEET, "daemon-a")
    b = PostgresLeadership(fresh_postgres_url, FLEET, "daemon-b")
    metrics_a, metrics_b = DaemonMetrics(), DaemonMetrics()
    guard_a = LeaderGuard(a, metrics_a, standby_poll=0.0, backoff_initial=0.0)
    guard_b = LeaderGuard(b, metrics_b, standby_poll=0.0, backoff_initial=0.0)
    events: list[str] = []

    async def scenario() -> None:
        assert await guard_a.tick()
        assert not await guard_b.tick()  # one acts, the other stands by
        assert not await guard_b.tick()
        old_epoch = guard_a.epoch
        assert old_epoch is not None
        guard_a.before_mutation()  # the leader may mutate
        store.upsert_node(_node("acme-dallas-001"), epoch=old_epoch)
        with pytest.raises(LeadershipLostError):
            guard_b.before_mutation()  # the standby may not

        _terminate_lock_holder(fresh_postgres_url)
        # the old leader's very next mutation is refused (live check on its lock connection)
        with pytest.raises(LeadershipLostError):
            guard_a.before_mutation()
        events.append("old leader stopped")
        assert not guard_a.is_leader
        # only then does the other take over, with a newer epoch
        assert await guard_b.tick()
        events.append("new leader's first mutation")
        guard_b.before_mutation()
        new_epoch = guard_b.epoch
        assert new_epoch is not None
        assert new_epoch > old_epoch
        store.upsert_node(_node("acme-dallas-001"), epoch=new_epoch)
        # fencing: a write carrying the old epoch is refused by the store
        with pytest.raises(LeadershipLostError):
            store.upsert_node(_node("acme-dallas-001"), epoch=old_epoch)
        # the old leader keeps running and stands by; it takes over again when free
        assert not await guard_a.tick()
        await guard_b.release()
        assert await guard_a.tick()
        assert guard_a.epoch is not None
        assert guard_a.epoch > new_epoch
        await guard_a.release()

    try:
        asyncio.run(scenario())
    finally:
        a.close()
        b.close()
    assert events == ["old leader stopped", "new leader's first mutation"]
    assert (
        metrics_a.registry.get_sample_value(
            "reconciler_leadership_changes_total", {"event": "lost"}
        )
        == 1.0
    )


def test_loss_is_noticed_without_a_mutation(fresh_postgres_url: str, store: SqlStore) -> None:
    a = PostgresLeadership(fresh_postgres_url, FLEET, "daemon-a")
    guard = LeaderGuard(a, standby_poll=0.0, backoff_initial=0.0)

    async def scenario() -> None:
        assert await guard.tick()
        _terminate_lock_holder(fresh_postgres_url)
        assert not await guard.tick()  # the periodic check sees it
        assert not guard.is_leader
        assert await guard.tick()  # and it takes leadership again (nobody else holds it)
        await guard.release()

    try:
        asyncio.run(scenario())
    finally:
        a.close()
