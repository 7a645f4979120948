"""The light reads a daemon's in-memory fleet polls (issue 14): node marks, records by name,
the recent beats of some nodes. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import psycopg
import pytest
from conftest import empty_postgres
from state_builders import FakeClock, beat, make_node

from reconciler.core.fleet import IntentStatus, NodeMark, NodeStatus
from state import SqlStore
from state.store import open_store


def test_a_beat_advances_the_count_and_not_the_version(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_nodes([make_node("a"), make_node("b")])
    before = store.node_marks("acme")
    assert sorted(before) == ["a", "b"]
    assert before["a"].heartbeat_seq == 0
    assert before["a"].last_heartbeat is None
    t = clock.advance(30)
    store.record_heartbeats("acme", [beat("a", t)])
    after = store.node_marks("acme")
    assert after["a"].heartbeat_seq == 1
    assert after["a"].last_heartbeat == t
    assert after["a"].version == before["a"].version  # a beat is not a record change
    assert after["b"] == before["b"]


def test_every_write_of_a_record_changes_its_version(store: SqlStore, clock: FakeClock) -> None:
    node = make_node("a")
    store.upsert_nodes([node, make_node("b")])
    seen = store.node_marks("acme")["a"].version
    for change in (
        lambda: store.upsert_node(dataclasses.replace(node, status=NodeStatus.PAUSED)),
        lambda: store.set_protected("acme", "a", True),
        lambda: store.clear_quarantine("acme", "a"),
    ):
        clock.advance(1)
        change()
        version = store.node_marks("acme")["a"].version
        assert version != seen
        seen = version
    clock.advance(1)
    store.close_node("acme", "a", clock.now())
    assert sorted(store.node_marks("acme")) == ["b"]


def test_records_and_beats_of_some_nodes(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_nodes([make_node(n) for n in ("a", "b", "c")])
    store.close_node("acme", "c", clock.now())
    assert [n.name for n in store.nodes_named("acme", ["c", "a", "ghost"])] == ["a"]
    start = clock.now()
    for k in range(3):
        at = start + timedelta(seconds=30 * (k + 1))
        store.record_heartbeats("acme", [beat("a", at), beat("b", at)])
    some = store.recent_metrics("acme", start, nodes=["b", "c"])
    assert sorted(some) == ["b"]
    assert [m.at for m in some["b"]] == [start + timedelta(seconds=30 * k) for k in (1, 2, 3)]
    assert store.recent_metrics("acme", start, nodes=[]) == {}
    assert store.recent_metrics("acme", start) == {
        **store.recent_metrics("acme", start, nodes=["a"]),
        **some,
    }


def test_the_beats_recorded_after_a_count(store_url: str, clock: FakeClock) -> None:
    """``metrics_after``: only the ring slots written since the count given (what a daemon
    reads of another daemon's beats), the whole ring when the count moved by the window or
    more, went back, or is negative."""
    store = open_store(store_url, upgrade=True, clock=clock.now, metrics_window=4)
    try:
        store.upsert_nodes([make_node(n) for n in ("a", "b", "c")])
        store.close_node("acme", "c", clock.now())
        start = clock.now()
        ats = [start + timedelta(seconds=30 * (k + 1)) for k in range(6)]
        for at in ats[:3]:
            store.record_heartbeats("acme", [beat("a", at), beat("b", at)])
        assert store.node_marks("acme")["a"].heartbeat_seq == 3
        assert store.metrics_after("acme", start, {}) == {}
        assert store.metrics_after("acme", start, {"a": 3, "b": 3}) == {}
        for at in ats[3:5]:
            store.record_heartbeats("acme", [beat("a", at)])
        # a's beats 3 and 4 went to slots 3 and 0 (the ring wrapped); b recorded nothing
        after = store.metrics_after("acme", start, {"a": 3, "b": 3, "c": 0, "ghost": 0})
        assert {n: [m.at for m in s] for n, s in after.items()} == {"a": ats[3:5]}
        assert [m.at for m in store.metrics_after("acme", ats[4], {"a": 3})["a"]] == [ats[4]]
        whole = {"a": ats[1:5]}  # the ring's four newest
        for starts in ({"a": -1}, {"a": 1}, {"a": 0}, {"a": 9}):
            got = store.metrics_after("acme", start, starts)
            assert {n: [m.at for m in s] for n, s in got.items()} == whole, starts
        assert store.metrics_after("acme", start, {"a": 2}) == store.recent_metrics(
            "acme", ats[2], nodes=["a"]
        )
    finally:
        store.close()


# --- the incremental read (node_marks_since) ----------------------------------------------


def _follow(store: SqlStore, held: dict[str, NodeMark], cursor: object) -> object:
    """Apply one incremental read to ``held`` (what a daemon does with it)."""
    delta = store.node_marks_since("acme", cursor)
    if delta.complete:
        held.clear()
    for name in delta.closed:
        held.pop(name, None)
    held.update(delta.marks)
    return delta.cursor


def test_the_incremental_read_sees_every_change_of_every_writer(
    store_url: str, store: SqlStore, clock: FakeClock
) -> None:
    """Beats, record writes, a close, a new node and a reopened name, from this store and from
    another process's (another replica, a CLI run): after each, following the incremental
    reads gives exactly the complete read. On PostgreSQL a read with nothing changed returns
    only marks already held (none, unless a transaction elsewhere on the server was running
    at the previous read: the cursor waits for the oldest)."""
    other = open_store(store_url, clock=clock.now)
    try:
        store.upsert_nodes([make_node(n) for n in ("a", "b", "c")])
        first = store.node_marks_since("acme", None)
        assert first.complete
        held = dict(first.marks)
        cursor = first.cursor
        postgres = store_url.startswith("postgresql")
        assert (cursor is not None) == postgres
        changes = [
            lambda: store.record_heartbeats("acme", [beat("a", clock.now())]),
            lambda: other.record_heartbeats("acme", [beat("b", clock.now())]),
            lambda: other.record_beats("acme", [beat("c", clock.now())]),
            lambda: other.set_protected("acme", "a", True),
            lambda: other.upsert_node(make_node("b", status=NodeStatus.ACTIVE)),
            lambda: other.close_node("acme", "c", clock.now()),
            lambda: other.upsert_node(make_node("d")),
            lambda: other.upsert_node(make_node("c", id=str(uuid.uuid4()))),
            lambda: other.clear_quarantine("acme", "d"),
        ]
        for change in changes:
            if postgres:
                quiet = store.node_marks_since("acme", cursor)
                assert not quiet.complete
                assert all(held[name] == mark for name, mark in quiet.marks.items())
            clock.advance(30)
            change()
            cursor = _follow(store, held, cursor)
            assert held == store.node_marks("acme")
    finally:
        other.close()


@pytest.mark.postgres
def test_a_write_committed_after_a_read_began_is_in_the_next_read(
    shared_postgres_url: str, clock: FakeClock
) -> None:
    """The cursor is the oldest transaction running when the read began, not the newest: a
    write whose transaction was open during a read (invisible to it) and committed afterwards
    is returned by the next read. A cursor taken at the read's end would lose it."""
    empty_postgres(shared_postgres_url)
    store = open_store(shared_postgres_url, upgrade=True, clock=clock.now)
    try:
        store.upsert_nodes([make_node("a"), make_node("b")])
        first = store.node_marks_since("acme", None)
        before, cursor = first.marks, first.cursor
        clock.advance(1)
        dsn = shared_postgres_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as writer:
            # a transaction that has its id before the read, and writes after it
            writer.execute("SELECT pg_current_xact_id()")
            # a later transaction completes first: the newest id seen is past the writer's
            store.set_protected("acme", "a", True)
            during = store.node_marks_since("acme", cursor)
            assert during.marks["a"].version != before["a"].version
            assert during.marks.get("b", before["b"]) == before["b"]
            writer.execute(
                "UPDATE sending_nodes SET heartbeat_seq = heartbeat_seq + 1 WHERE name = 'b'"
            )
            writer.commit()
        after = store.node_marks_since("acme", during.cursor)
        assert "b" in after.marks
        assert after.marks["b"].heartbeat_seq == 1
    finally:
        store.close()


def test_the_pending_intents_alone_are_those_of_the_whole_fleet(store: SqlStore) -> None:
    store.upsert_nodes([make_node("a")])
    first = store.begin_intent("acme", "create", "b", {"plan": "small"})
    store.begin_intent("acme", "create", "c", {"plan": "small"})
    store.begin_intent("other", "create", "d", {"plan": "small"})
    store.finish_intent(first.id, IntentStatus.DONE)
    pending = store.pending_intents("acme")
    assert [i.target for i in pending] == ["c"]
    assert pending == store.load_fleet("acme").pending_intents
