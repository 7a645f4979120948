"""The light reads a daemon's in-memory fleet polls (issue 14): node marks, records by name,
the recent beats of some nodes. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from state_builders import FakeClock, beat, make_node

from reconciler.core.fleet import NodeStatus
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
