"""The daemon's fleet in memory (issue 14): after any mix of beats committed here, beats
recorded by another daemon, record changes, closed and new nodes, time passing and polls, it
equals a full reload from the store; the liveness and figures caches equal the uncached
functions."""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.core.fleet import MarksDelta, NodeMetrics, NodeStatus, RecordedFleet, RecordedNode
from reconciler.core.health import assess
from reconciler.core.ports import StorePort
from reconciler.daemon.fleetstate import (
    Changes,
    FleetState,
    FullLoad,
    LivenessCache,
    read_changed,
    read_full,
    read_marks,
)
from reconciler.daemon.statusing import FiguresCache, build_view, summarise, utilization_by
from specs.model import FleetSpec, HealthPolicy, UnhealthyAction
from state import models as m
from state import sessions
from state.store import open_store
from tests.fakes.clocks import FakeClock
from tests.fakes.store import InMemoryStore

FLEET = "acme"
SPAN = timedelta(seconds=120)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

Op = tuple[Any, ...]
NODE = st.integers(0, 5)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("local"), NODE),
        st.tuples(st.just("other"), NODE),
        st.tuples(
            st.just("status"),
            NODE,
            st.sampled_from([NodeStatus.ACTIVE, NodeStatus.PAUSED, NodeStatus.UNHEALTHY]),
        ),
        st.tuples(st.just("protect"), NODE),
        st.tuples(st.just("close"), NODE),
        st.tuples(st.just("add"), NODE),
        st.tuples(st.just("advance"), st.integers(1, 90)),
        st.tuples(st.just("poll")),
        st.tuples(st.just("full")),
    ),
    max_size=40,
)


@pytest.fixture
def migrated_postgres_url(fresh_postgres_url: str) -> str:
    sessions.upgrade(fresh_postgres_url)
    return fresh_postgres_url


def empty(url: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for table in reversed(m.Base.metadata.sorted_tables):
            conn.execute(f"DELETE FROM {table.name}")


def record(name: str, now: datetime) -> RecordedNode:
    return RecordedNode(
        id=str(uuid.uuid4()),
        fleet=FLEET,
        name=name,
        region="dallas",
        plan="baseline",
        status=NodeStatus.ACTIVE,
        created_at=now,
        approximate_cost=Decimal("9.99"),
    )


def figures(series: Sequence[NodeMetrics]) -> list[tuple[Any, ...]]:
    """What the daemon reads of a beat (the store keeps neither ``sent_at`` nor soft
    bounces in its ring)."""
    return [
        (b.at, b.cpu, b.memory, b.disk, b.queue_length, b.sent, b.bounces, b.complaints)
        for b in series
    ]


class Harness:
    def __init__(self, store: StorePort, clock: FakeClock, window: int = 1000) -> None:
        self.store = store
        self.clock = clock
        self.state = FleetState(FLEET, window=window)
        self.tick = itertools.count(1)
        for i in range(4):
            store.upsert_node(record(f"n{i}", clock.now()))
        self.state.apply_full(read_full(store, FLEET, self.since()), clock.now())

    def since(self) -> datetime:
        return self.clock.now() - SPAN

    def open_names(self) -> list[str]:
        return sorted(n.name for n in self.store.load_fleet(FLEET).nodes)

    def pick(self, index: int) -> RecordedNode | None:
        nodes = self.store.load_fleet(FLEET).nodes
        return nodes[index % len(nodes)] if nodes else None

    def beat(self, index: int) -> NodeMetrics | None:
        node = self.pick(index)
        if node is None:
            return None
        tick = next(self.tick)
        at = self.clock.now() + timedelta(microseconds=tick)
        return NodeMetrics(node.name, at, 0.5, 0.4, 0.3, tick % 7, tick, tick % 3, 0, 30.0)

    def run(self, op: Op) -> None:
        kind = op[0]
        now = self.clock.now()
        if kind in ("local", "other"):
            beat = self.beat(op[1])
            if beat is not None:
                recorded = self.store.record_beats(FLEET, [beat])
                if kind == "local" and recorded[0]:
                    self.state.committed([beat])
        elif kind == "status":
            node = self.pick(op[1])
            if node is not None:
                self.store.upsert_node(dataclasses.replace(node, status=op[2]))
        elif kind == "protect":
            node = self.pick(op[1])
            if node is not None:
                self.store.set_protected(FLEET, node.name, not node.protected)
        elif kind == "close":
            node = self.pick(op[1])
            if node is not None:
                self.store.close_node(FLEET, node.name, now)
        elif kind == "add":
            self.store.upsert_node(record(f"new{op[1]}-{next(self.tick)}", now))
        elif kind == "advance":
            self.clock.advance(op[1])
        elif kind == "poll":
            self.poll()
        elif kind == "full":
            self.state.apply_full(read_full(self.store, FLEET, self.since()), now)
            self.state.trim(self.since())

    def poll(self) -> None:
        """What Daemon._refresh does, without the threads."""
        state = self.state
        state.drain()
        delta, costs = read_marks(self.store, FLEET, state.marks_cursor)
        marks, records, series, closed, moved = state.changed(delta)
        nodes, beats = read_changed(
            self.store, FLEET, self.since(), records, state.read_from(series, records)
        )
        state.apply_changes(Changes(marks, costs, nodes, beats, series, moved), closed)
        state.trim(self.since())

    def check(self) -> None:
        truth = self.store.load_fleet(FLEET)
        assert self.state.recorded.nodes == truth.nodes
        stored = self.store.recent_metrics(FLEET, self.since())
        mine = self.state.recent()
        assert {n: figures(s) for n, s in mine.items() if s} == {
            n: figures(s) for n, s in stored.items() if s
        }


def exercise(make: Callable[[FakeClock], StorePort], ops: list[Op], window: int = 1000) -> None:
    clock = FakeClock(T0)
    harness = Harness(make(clock), clock, window)
    for op in ops:
        harness.run(op)
        if op[0] == "poll":
            harness.check()
    harness.poll()
    harness.check()
    # a second poll with nothing new reads no record and no series again
    harness.state.drain()
    delta, _ = read_marks(harness.store, FLEET, harness.state.marks_cursor)
    assert harness.state.changed(delta)[1:] == (frozenset(),) * 4


@given(OPS)
@settings(max_examples=150, deadline=None)
def test_the_fleet_in_memory_equals_a_full_reload(ops: list[Op]) -> None:
    exercise(lambda clock: InMemoryStore(now=clock.now), ops)


@given(OPS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.parametrize("window", [1000, 3])
def test_the_fleet_in_memory_equals_a_full_reload_of_the_sql_store(
    tmp_path: Path, window: int, ops: list[Op]
) -> None:
    """Also with a ring of 3 beats per node, which a few beats of one node wrap: a poll reads
    only the slots written since it last looked (``metrics_after``), or the whole ring."""
    path = tmp_path / f"state-{uuid.uuid4().hex[:8]}.db"
    stores: list[Any] = []

    def make(clock: FakeClock) -> StorePort:
        store = open_store(f"sqlite:///{path}", metrics_window=window)
        stores.append(store)
        return store

    try:
        exercise(make, ops, window)
    finally:
        for store in stores:
            store.close()


@pytest.mark.postgres
@given(OPS)
@example([("local", 0), ("close", 0)])
@example([("local", 1), ("other", 1), ("poll",), ("local", 1), ("protect", 1), ("close", 2)])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_fleet_in_memory_equals_a_full_reload_of_postgresql(
    migrated_postgres_url: str, ops: list[Op]
) -> None:
    """On PostgreSQL the polls read only the rows changed since the previous poll began
    (``node_marks_since``): every change of every writer (the "other" beats, the record
    changes and closes made beside the state) must still be seen."""
    empty(migrated_postgres_url)
    stores: list[Any] = []

    def make(clock: FakeClock) -> StorePort:
        store = open_store(migrated_postgres_url, metrics_window=1000)
        stores.append(store)
        return store

    try:
        exercise(make, ops)
    finally:
        for store in stores:
            store.close()


def test_a_beat_seen_twice_counts_once_and_a_poll_then_reads_nothing() -> None:
    clock = FakeClock(T0)
    harness = Harness(InMemoryStore(now=clock.now), clock)
    beat = harness.beat(0)
    assert beat is not None
    assert harness.store.record_beats(FLEET, [beat]) == [True]
    harness.state.committed([beat, beat])  # delivered twice (a retried callback)
    harness.poll()
    harness.check()
    assert len(harness.state.recent()[beat.node]) == 1


# --- the caches equal the functions they stand for ----------------------------------------

LAST = st.one_of(st.none(), st.integers(-4000, 100))
STATUS = st.sampled_from(
    [NodeStatus.ACTIVE, NodeStatus.WARMING, NodeStatus.UNHEALTHY, NodeStatus.PAUSED]
)


@given(
    st.lists(st.tuples(LAST, STATUS), min_size=1, max_size=6),
    st.lists(st.integers(0, 400), min_size=1, max_size=12),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_the_liveness_cache_equals_assess(
    nodes: list[tuple[int | None, NodeStatus]], steps: list[int], alert_only: bool
) -> None:
    policy = HealthPolicy(
        on_unhealthy=UnhealthyAction.ALERT if alert_only else UnhealthyAction.REPLACE,
        replace_after=timedelta(minutes=2),
    )
    records = [
        dataclasses.replace(
            record(f"n{i}", T0),
            status=status,
            last_heartbeat=None if last is None else T0 + timedelta(seconds=last),
        )
        for i, (last, status) in enumerate(nodes)
    ]
    cache = LivenessCache()
    now = T0
    for step in steps:
        now += timedelta(seconds=step)
        assert cache.assess(records, now, policy) == assess(records, now, policy)


def spec_of(tmp_path: Path) -> FleetSpec:
    from specs.loading import load_spec

    path = tmp_path / "fleet.yaml"
    path.write_text(
        "apiVersion: fleet-reconciler/v1\nkind: Fleet\nmetadata: {name: acme}\n"
        "plans:\n  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}\n"
        "regions:\n  dallas: {location_id: 13, plan: baseline, nodes: {min: 1, max: 9}}\n"
    )
    return load_spec([path]).spec


@given(st.data())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_figures_cache_and_the_summary_equal_the_fleet_view(
    tmp_path: Path, data: st.DataObject
) -> None:
    spec = spec_of(tmp_path)
    records = [
        dataclasses.replace(
            record(f"n{i}", T0),
            status=data.draw(STATUS),
            last_heartbeat=T0 + timedelta(seconds=data.draw(st.integers(-300, 0))),
            warmup_started_at=T0 - timedelta(days=data.draw(st.integers(0, 40))),
        )
        for i in range(data.draw(st.integers(1, 5)))
    ]
    recent: dict[str, tuple[NodeMetrics, ...]] = {}
    for node in records:
        offsets = sorted(set(data.draw(st.lists(st.integers(-200, 10), max_size=6))))
        recent[node.name] = tuple(
            NodeMetrics(node.name, T0 + timedelta(seconds=o), 0.5, 0.4, 0.3, o % 5, 40 + o, 1, 0)
            for o in offsets
        )
    cache = FiguresCache()
    from reconciler.core.fleet import RecordedFleet

    fleet = RecordedFleet(FLEET, tuple(records))
    now = T0
    for step in data.draw(st.lists(st.integers(0, 100), min_size=1, max_size=5)):
        now += timedelta(seconds=step)
        health = assess(records, now, spec.health)
        plain = build_view(spec, fleet, recent, now, assessment=health)
        cached = build_view(spec, fleet, recent, now, assessment=health, cache=cache)
        assert cached == plain
        summary = summarise(spec, fleet, recent, now, health, cache)
        assert summary == expected_summary(spec, plain, health, recent, now, records)


def expected_summary(
    spec: FleetSpec,
    view: Any,
    health: Any,
    recent: Mapping[str, Sequence[NodeMetrics]],
    now: datetime,
    records: list[RecordedNode],
) -> Any:
    from reconciler.daemon.statusing import FleetSummary, node_loads

    statuses: dict[tuple[str, str], int] = {}
    grades: dict[tuple[str, str], int] = {}
    unhealthy: dict[str, int] = {}
    for row in view.nodes:
        statuses[(row.region, row.status)] = statuses.get((row.region, row.status), 0) + 1
        grades[(row.region, row.grade)] = grades.get((row.region, row.grade), 0) + 1
        unhealthy[row.region] = unhealthy.get(row.region, 0) + (1 if row.unhealthy else 0)
    loads = node_loads(spec, records, recent, now, health.unhealthy)
    return FleetSummary(
        statuses=statuses,
        grades=grades,
        unhealthy=unhealthy,
        groups=utilization_by(loads, spec.scaling.per_core_rate),
        monthly_cost=view.monthly_cost,
    )


def test_a_full_load_of_an_unchanged_fleet_keeps_what_is_cached_valid() -> None:
    clock = FakeClock(T0)
    harness = Harness(InMemoryStore(now=clock.now), clock)
    for index in range(3):
        harness.run(("local", index))
    harness.poll()
    before = harness.state.recorded
    series = harness.state.recent()
    versions = (harness.state.records_version, harness.state.beats_version)
    harness.run(("full",))  # leadership regained: the store read again, nothing changed
    assert harness.state.recorded is before
    assert all(harness.state.recent()[name] is s for name, s in series.items())
    assert (harness.state.records_version, harness.state.beats_version) == versions
    harness.run(("status", 0, NodeStatus.PAUSED))
    harness.run(("full",))
    assert harness.state.recorded is not before
    kept = [a is b for a, b in zip(before.nodes, harness.state.recorded.nodes, strict=True)]
    assert kept.count(False) == 1  # only the changed record is a new object
    harness.check()


def test_a_node_closed_after_a_beat_merged_here_leaves_on_an_incremental_poll() -> None:
    """Found by the PostgreSQL property (ops local 0, close 0): a node with a beat merged here
    and its record closed since the last poll must leave, not be kept by its held mark."""
    clock = FakeClock(T0)
    harness = Harness(InMemoryStore(now=clock.now), clock)
    beat = harness.beat(0)
    assert beat is not None
    assert harness.store.record_beats(FLEET, [beat]) == [True]
    harness.state.committed([beat])
    harness.state.drain()
    marks = harness.store.node_marks(FLEET)
    harness.store.close_node(FLEET, beat.node, clock.now())
    delta = MarksDelta({}, complete=False, cursor=1, closed=frozenset({beat.node}))
    _, _, _, closed, _ = harness.state.changed(delta)
    assert closed == frozenset({beat.node})
    assert beat.node in marks


# --- the compact series (issue 14: RSS under load) ----------------------------------------

FIGURE = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 30.0, 30.001, float("nan"), float("inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
COUNT = st.one_of(st.sampled_from([0, 1, 400, 70_000]), st.integers(0, 2**40))


def bits(beat: NodeMetrics) -> tuple[Any, ...]:
    """Every figure a beat is read for, floats by their bits (0.0 and -0.0, NaN payloads)."""
    return (
        beat.at,
        *(struct.pack("<d", x) for x in (beat.cpu, beat.memory, beat.disk, beat.interval_seconds)),
        beat.queue_length,
        beat.sent,
        beat.bounces,
        beat.complaints,
    )


@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),
            FIGURE,
            FIGURE,
            FIGURE,
            COUNT,
            COUNT,
            FIGURE,
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
)
@example(
    rows=[
        (0, 0.0, float("nan"), 1.5, 0, 400, 30.0, False, True),
        (1, -0.0, float("nan"), 1.5, 0, 400, 30.0, True, False),
        (2, 0.0, 0.5, -0.0, 0, 400, 30.001, False, True),
    ],
)
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_compact_series_holds_the_same_figures_bit_for_bit(
    tmp_path: Path, rows: list[tuple[Any, ...]]
) -> None:
    """The beats held (merged from the intake, in any order, and read back from the store)
    carry the figures of the beats given, bit for bit, name their node with the record's own
    string, and give the same fleet view as the beats themselves."""
    state = FleetState(FLEET, window=1000)
    node = record("n0", T0)
    state.apply_full(FullLoad({}, None, RecordedFleet(FLEET, (node,)), {}), T0)
    given_beats: dict[datetime, NodeMetrics] = {}
    for offset, cpu, memory, disk, queue, sent, interval, soft, drain in rows:
        at = T0 + timedelta(seconds=offset)
        beat = NodeMetrics(
            "".join(["n", "0"]),  # another string object than the record's name
            at,
            cpu,
            memory,
            disk,
            queue,
            sent,
            queue % 3,
            sent % 5,
            interval,
            soft_bounces=7 if soft else 0,
            sent_at=offset,
        )
        if at not in given_beats:
            given_beats[at] = beat
        state.committed([beat])
        if drain:
            state.drain()
    state.drain()
    expected = [given_beats[at] for at in sorted(given_beats)]
    held = state.recent()["n0"]
    assert [bits(b) for b in held] == [bits(b) for b in expected]
    assert all(b.node is node.name and b.sent_at is None and b.soft_bounces == 0 for b in held)
    # the same series read back from a store (a full load): the same again
    state.apply_full(FullLoad({}, None, RecordedFleet(FLEET, (node,)), {"n0": list(expected)}), T0)
    assert [bits(b) for b in state.recent()["n0"]] == [bits(b) for b in expected]
    finite = all(math.isfinite(x) for b in expected for x in (b.cpu, b.memory, b.disk))
    if finite and all(b.interval_seconds > 0 for b in expected):
        spec = spec_of(tmp_path)
        fleet = RecordedFleet(FLEET, (node,))
        now = expected[-1].at
        health = assess([node], now, spec.health)
        assert build_view(spec, fleet, {"n0": held}, now, assessment=health) == build_view(
            spec, fleet, {"n0": tuple(expected)}, now, assessment=health
        )
