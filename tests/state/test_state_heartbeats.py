"""Heartbeats: batched writes, a bounded window per node, pruning."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from state_builders import FakeClock, beat, count_statements, make_node

from state import SqlStore, open_store


def test_beats_update_last_heartbeat_and_skip_unknown_nodes(
    store: SqlStore, clock: FakeClock
) -> None:
    store.upsert_nodes([make_node("a"), make_node("b")])
    store.close_node("acme", "b", clock.now())
    t = clock.advance(30)
    written = store.record_heartbeats("acme", [beat("a", t), beat("b", t), beat("ghost", t)])
    assert written == 1
    (node,) = store.load_fleet("acme").nodes
    assert node.last_heartbeat == t
    assert store.recent_metrics("acme", t)["a"][0].sent == 300
    # an older beat arriving late never moves last_heartbeat back
    store.record_heartbeats("acme", [beat("a", t - timedelta(seconds=90))])
    assert store.load_fleet("acme").nodes[0].last_heartbeat == t
    assert store.record_heartbeats("acme", []) == 0


def test_window_is_bounded_and_keeps_the_latest(store: SqlStore, clock: FakeClock) -> None:
    window = store.metrics_window
    store.upsert_nodes([make_node(f"n{i}") for i in range(3)])
    start = clock.now()
    for k in range(window * 2 + 5):
        at = start + timedelta(seconds=30 * k)
        store.record_heartbeats("acme", [beat(f"n{i}", at, queue_length=k) for i in range(3)])
    assert store.metrics_rows() == 3 * window
    series = store.recent_metrics("acme", start)
    assert sorted(series) == ["n0", "n1", "n2"]
    kept = [m.queue_length for m in series["n0"]]
    assert kept == list(range(window + 5, 2 * window + 5))  # oldest first, the latest N


def test_a_batch_is_a_few_statements(store: SqlStore, clock: FakeClock) -> None:
    names = [f"acme-n{i:04d}" for i in range(1200)]
    store.upsert_nodes([make_node(n, id=None) for n in names])
    beats = [beat(n, clock.now()) for n in names]
    with count_statements(store.engine) as statements:
        assert store.record_heartbeats("acme", beats) == 1200
    # three chunks of 500 names: one SELECT, one upsert, one executemany UPDATE each
    # (the driver may split a multi-row upsert into a few pages)
    assert len(statements) <= 15


def test_prune_removes_old_metrics_and_those_of_closed_nodes(
    store: SqlStore, clock: FakeClock
) -> None:
    store.upsert_nodes([make_node("a"), make_node("b")])
    old = clock.now()
    store.record_heartbeats("acme", [beat("a", old), beat("b", old)])
    new = clock.advance(3600)
    store.record_heartbeats("acme", [beat("a", new), beat("b", new)])
    store.close_node("acme", "b", new)
    assert store.prune_metrics(new - timedelta(minutes=30)) == 3
    assert store.metrics_rows() == 1
    assert list(store.recent_metrics("acme", old)) == ["a"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(st.sampled_from("abc"), max_size=12), min_size=1, max_size=8),
    window=st.integers(min_value=1, max_value=5),
)
def test_window_property(tmp_path_factory: object, batches: list[list[str]], window: int) -> None:
    """Whatever the batches, each node keeps min(beats, window) rows: its latest beats."""
    path = tmp_path_factory.mktemp("hb")  # type: ignore[attr-defined]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store = open_store(f"sqlite:///{path}/s.db", metrics_window=window, clock=lambda: start)
    try:
        store.upsert_nodes([make_node(n) for n in "abc"])
        sent: dict[str, list[int]] = {n: [] for n in "abc"}
        tick = 0
        for batch in batches:
            beats = []
            for name in batch:
                tick += 1
                beats.append(beat(name, start + timedelta(seconds=tick), sent=tick))
                sent[name].append(tick)
            store.record_heartbeats("acme", beats)
        series = store.recent_metrics("acme", start)
        for name in "abc":
            assert [m.sent for m in series.get(name, [])] == sent[name][-window:]
    finally:
        store.close()


@pytest.mark.postgres
def test_a_deadlocked_batch_is_run_again(shared_postgres_url: str, clock: FakeClock) -> None:
    """PostgreSQL picks a victim when two recorders deadlock: the whole (rolled back) batch is
    simply recorded again."""
    import psycopg
    from conftest import empty_postgres

    from tests.driver_faults import failing_statements

    empty_postgres(shared_postgres_url)
    store = open_store(shared_postgres_url, clock=clock.now)
    failures = [psycopg.errors.DeadlockDetected("deadlock detected (simulated)")]

    def victim() -> BaseException | None:
        return failures.pop() if failures else None

    try:
        store.upsert_nodes([make_node("a")])
        with failing_statements(store.engine, "INSERT INTO node_metrics", victim):
            assert store.record_heartbeats("acme", [beat("a", clock.now())]) == 1
        assert failures == []
        assert store.metrics_rows() == 1
        assert store.load_fleet("acme").nodes[0].last_heartbeat == clock.now()
    finally:
        store.close()


def test_signed_beats_are_recorded_once_across_recorders_and_reopens(
    store: SqlStore, store_url: str, clock: FakeClock
) -> None:
    """A beat carries the node's signed timestamp (``sent_at``): a beat not newer than the
    newest recorded one of its node is refused by every store handle (replica, restart)."""
    from dataclasses import replace

    store.upsert_nodes([make_node("a"), make_node("b")])
    t = clock.advance(30)
    first = replace(beat("a", t), sent_at=1_000)
    assert store.record_beats("acme", [first, replace(beat("b", t), sent_at=5)]) == [True, True]
    other = open_store(store_url)  # another daemon on the same database
    try:
        assert other.record_beats("acme", [first]) == [False]  # the same beat again
        older = replace(beat("a", t + timedelta(seconds=1)), sent_at=999)
        newer = replace(beat("a", t + timedelta(seconds=2)), sent_at=1_001)
        assert other.record_beats("acme", [older, replace(beat("b", t), sent_at=6)]) == [
            False,
            True,
        ]
        assert other.record_beats("acme", [newer]) == [True]
        assert store.record_beats("acme", [newer]) == [False]
        # unsigned beats (no sent_at) are not checked
        assert store.record_heartbeats("acme", [beat("a", t + timedelta(seconds=3))]) == 1
    finally:
        other.close()
    sent = [m.at for m in store.recent_metrics("acme", t - timedelta(seconds=1))["a"]]
    assert len(sent) == 3  # first, newer, the unsigned one


# --- in-place updates on PostgreSQL (issue 14) ----------------------------------------------


def _pages(url: str, table: str, key: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute(f"SELECT {key}::text, (ctid::text::point)[0] FROM {table}").fetchall()
    return {str(k): int(page) for k, page in rows}


@pytest.mark.postgres
def test_a_round_of_beats_updates_every_row_on_its_own_page(
    fresh_postgres_url: str, clock: FakeClock
) -> None:
    """No indexed column changes and every page has room for a new version of each of its
    rows (fillfactor 50), so a beat is a heap-only (HOT) update: the row stays on its page
    and no index is touched, even when one transaction updates every row of a page."""
    # a database of its own: the shared one's pages hold the rows earlier tests deleted
    url = fresh_postgres_url
    store = open_store(url, upgrade=True, clock=clock.now)
    try:
        names = [f"acme-n{i:04d}" for i in range(600)]
        store.upsert_nodes([make_node(n, id=None) for n in names])
        start = clock.now()
        for k in range(store.metrics_window):  # fill every ring: the next beats are updates
            store.record_heartbeats(
                "acme", [beat(n, start + timedelta(seconds=30 * k)) for n in names]
            )
        # Pruning a page (which makes room for the in-place update) needs the previous round's
        # versions to be older than every running transaction's snapshot in the whole cluster
        # (PostgreSQL's GlobalVis test stops at the snapshot's xmin, whatever the database): a
        # long transaction of another test or program on the same server holds a round's
        # versions back and the rows move for a reason that is not the schema's. Each attempt
        # is three rounds; one attempt without such interference must keep the rows in place.
        k = store.metrics_window
        seen: list[tuple[str, float]] = []
        for _attempt in range(6):
            metrics_before = _pages(url, "node_metrics", "(node_id, slot)")
            nodes_before = _pages(url, "sending_nodes", "id")
            for _ in range(3):
                # a node beats every 30 s: rounds back to back would be far harsher than that
                time.sleep(0.3)
                at = start + timedelta(seconds=30 * k)
                k += 1
                assert store.record_heartbeats("acme", [beat(n, at) for n in names]) == len(names)
            shares = {
                table: sum(after.get(key) == page for key, page in before.items()) / len(before)
                for table, key_sql, before in (
                    ("node_metrics", "(node_id, slot)", metrics_before),
                    ("sending_nodes", "id", nodes_before),
                )
                for after in [_pages(url, table, key_sql)]
            }
            seen.extend(shares.items())
            if min(shares.values()) > 0.9:
                break
        else:
            raise AssertionError(f"rows moved in every attempt (table, share that stayed): {seen}")
    finally:
        store.close()


@pytest.mark.postgres
def test_no_index_covers_a_column_a_beat_rewrites(shared_postgres_url: str) -> None:
    import psycopg
    from conftest import empty_postgres

    empty_postgres(shared_postgres_url)
    with psycopg.connect(
        shared_postgres_url.replace("postgresql+psycopg://", "postgresql://")
    ) as c:
        rows = c.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE tablename IN "
            "('node_metrics', 'sending_nodes', 'node_send_counts')"
        ).fetchall()
        options = dict(
            c.execute(
                "SELECT relname, array_to_string(reloptions, ',') FROM pg_class WHERE relname IN "
                "('node_metrics', 'sending_nodes', 'node_send_counts')"
            ).fetchall()
        )
    rewritten = {
        "node_metrics": ("at", "sent", "queue_length", "cpu", "memory", "disk", "bounces"),
        "sending_nodes": ("heartbeat_seq", "last_heartbeat", "last_beat_sent_at"),
        "node_send_counts": ("sent", "hard_bounces", "soft_bounces", "complaints"),
    }
    for table, definition in rows:
        words = set(re.findall(r"\w+", definition.split("(", 1)[1]))
        for column in rewritten[table]:
            assert column not in words, (table, definition)
    assert all("fillfactor=50" in (options.get(t) or "") for t in rewritten), options


@pytest.mark.postgres
def test_a_batch_probes_its_nodes_on_a_fresh_database(fresh_postgres_url: str) -> None:
    """Without statistics the planner thinks a fleet has one node: the batch's UPDATE must
    still find each node by an index probe, never read the whole fleet (a hash join over all
    the nodes cost ~10 ms per batch at 10,000 nodes, whatever the batch's size)."""
    import json

    from sqlalchemy import text

    from state.store import _PG_PROBES_ONLY, _PG_TOUCH_NODES

    store = open_store(fresh_postgres_url, upgrade=True)
    try:
        names = [f"acme-n{i:04d}" for i in range(2000)]
        store.upsert_nodes([make_node(n, id=None) for n in names])
        now = datetime.now(UTC)
        for size in (16, 500):
            batch = names[100 : 100 + size]
            with store.engine.begin() as connection:
                connection.execute(_PG_PROBES_ONLY)
                (plan,) = connection.execute(
                    text(f"EXPLAIN (FORMAT JSON) {_PG_TOUCH_NODES.element.text}"),
                    {
                        "fleet": "acme",
                        "names": batch,
                        "counts": [1] * size,
                        "ats": [now] * size,
                        "firsts": [None] * size,
                        "lasts": [None] * size,
                    },
                ).one()
            document = json.dumps(plan)
            nodes = re.findall(r'"Node Type": "([^"]+)"', document)
            for whole_table in ("Hash Join", "Merge Join", "Seq Scan", "Bitmap Heap Scan"):
                assert whole_table not in nodes, nodes
            assert nodes.count("Index Scan") == 2, nodes  # name -> id, then id -> row
    finally:
        store.close()


@pytest.mark.postgres
def test_a_batch_whose_connection_cannot_be_opened_is_a_store_error(
    fresh_postgres_url: str, clock: FakeClock
) -> None:
    """The batch write takes a raw driver connection from the pool; when a new one cannot be
    opened (the database stopped or restarting) the driver's own error came out unconverted
    and killed the daemon's heartbeat writer (found by the private-PostgreSQL fault test)."""
    import psycopg

    from reconciler.core.errors import StoreError

    url = fresh_postgres_url
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    store = open_store(url, upgrade=True, clock=clock.now)
    try:
        store.upsert_nodes([make_node("acme-n1", id=None)])
        store.engine.dispose()  # no pooled connection left: the next batch opens one
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"')
        try:
            with pytest.raises(StoreError):
                store.record_beats("acme", [beat("acme-n1", clock.now())])
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"')
        assert store.record_beats("acme", [beat("acme-n1", clock.now())]) == [True]
    finally:
        store.close()
