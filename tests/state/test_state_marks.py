"""The light reads a daemon's in-memory fleet polls (issue 14): node marks, records by name,
the recent beats of some nodes. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from state_builders import FakeClock, beat, make_node

from reconciler.core.fleet import NodeStatus
from state import SqlStore


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
