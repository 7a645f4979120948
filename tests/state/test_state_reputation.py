"""The reputation store on SQLite and PostgreSQL: listings with hysteresis, node states,
hourly counts, DNSBL query counts, an operator's resume, fencing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from state_builders import FakeClock, beat, make_node

from reconciler.core.errors import LeadershipLostError, StoreError
from reconciler.core.reputation import (
    IpState,
    ListingEvent,
    ListingState,
    ReputationRecord,
    SendCounts,
    day_of,
)
from specs.blocklists import ListingAction, Severity
from state import SqlStore, open_store
from state.reputation import SqlReputationStore

ZEN = "zen.spamhaus.org"


def listing(clock: FakeClock, **changes: object) -> ListingState:
    values: dict[str, object] = {
        "ip": "192.0.2.5",
        "zone": ZEN,
        "listed_at": clock.now(),
        "codes": ("127.0.0.2",),
        "listing": "SBL",
        "severity": Severity.HIGH,
        "action": ListingAction.PAUSE,
    }
    values.update(changes)
    return ListingState(**values)  # type: ignore[arg-type]


def test_listing_life_cycle(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_node(make_node(ip_address="192.0.2.5"))
    rep = SqlReputationStore(store)
    opened = listing(clock)
    rep.save_reputation("acme", [], [ListingEvent("listed", opened, clock.now())], {}, clock.now())
    rep.save_reputation("acme", [], [ListingEvent("listed", opened, clock.now())], {}, clock.now())
    snapshot = rep.reputation_snapshot("acme", clock.now(), day_of(clock.now()))
    assert len(snapshot.listings) == 1  # one open listing per (ip, zone)
    got = snapshot.listings[0]
    assert (got.listing, got.codes, got.action) == ("SBL", ("127.0.0.2",), ListingAction.PAUSE)
    first_clean = clock.advance(3600)
    changed = ListingState(
        got.ip,
        got.zone,
        got.listed_at,
        got.codes,
        got.listing,
        got.severity,
        got.action,
        1,
        first_clean,
    )
    rep.save_reputation(
        "acme", [], [ListingEvent("changed", changed, first_clean)], {}, first_clean
    )
    again = rep.reputation_snapshot("acme", clock.now(), day_of(clock.now())).listings[0]
    assert again.clean_checks == 1
    assert again.first_clean_at == first_clean
    rep.save_reputation(
        "acme", [], [ListingEvent("delisted", changed, first_clean)], {}, clock.advance(7200)
    )
    assert rep.reputation_snapshot("acme", clock.now(), day_of(clock.now())).listings == ()
    (row,) = rep.listing_history("acme")
    assert row["node"] == "acme-dallas-001"
    assert row["delisted_at"] == first_clean.isoformat()
    assert row["listing"] == "SBL"
    assert "severity high" in row["details"]


def test_records_counts_and_queries(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_node(make_node(ip_address="192.0.2.5"))
    rep = SqlReputationStore(store)
    now = clock.now()
    record = ReputationRecord(
        "acme-dallas-001",
        IpState.QUARANTINED,
        quarantine="bounces 9%",
        quarantined_at=now,
        paused_at=now,
        warmup_held_since=now,
    )
    rep.save_reputation("acme", [record], [], {ZEN: 10, "b.example": 0}, now)
    rep.save_reputation("acme", [record], [], {ZEN: 5}, now)
    written = rep.add_send_counts(
        "acme",
        [
            ("acme-dallas-001", now, SendCounts(sent=90, hard_bounces=10)),
            ("acme-dallas-001", now + timedelta(minutes=5), SendCounts(sent=10, complaints=1)),
            ("acme-dallas-001", now - timedelta(days=1), SendCounts(sent=1000)),
            ("acme-ghost-001", now, SendCounts(sent=1)),  # unknown: skipped
        ],
    )
    assert written == 2
    rep.add_send_counts("acme", [("acme-dallas-001", now, SendCounts(soft_bounces=3))])
    snapshot = rep.reputation_snapshot("acme", now - timedelta(days=2), day_of(now))
    assert snapshot.records["acme-dallas-001"] == record
    assert snapshot.queries_today == {ZEN: 15}
    buckets = snapshot.buckets["acme-dallas-001"]
    assert len(buckets) == 2
    assert buckets[-1].counts == SendCounts(sent=100, hard_bounces=10, soft_bounces=3, complaints=1)
    assert snapshot.sent_today["acme-dallas-001"] == 110
    assert rep.resume_reputation("acme", "acme-dallas-001", clock.advance(60))
    resumed = rep.reputation_snapshot("acme", now, day_of(now)).records["acme-dallas-001"]
    assert resumed.quarantine is None
    assert resumed.paused_at is None
    assert resumed.rates_since == clock.now()
    assert not rep.resume_reputation("acme", "acme-nobody-001", clock.now())
    assert rep.prune_send_counts(now - timedelta(hours=2)) == 1


def test_a_stale_leader_cannot_write(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_node(make_node(ip_address="192.0.2.5"))
    lease = store.acquire_lock("acme", "a", 60, clock.now())
    store.release_lock(lease)
    newer = store.acquire_lock("acme", "b", 60, clock.now())
    rep = SqlReputationStore(store)
    record = ReputationRecord("acme-dallas-001", IpState.LISTED)
    with pytest.raises(LeadershipLostError):
        rep.save_reputation("acme", [record], [], {}, clock.now(), epoch=lease.epoch)
    rep.save_reputation("acme", [record], [], {}, clock.now(), epoch=newer.epoch)


def test_heartbeats_carry_their_sending_counts_in_the_same_transaction(
    store: SqlStore, clock: FakeClock
) -> None:
    """A beat's sent / hard / soft bounces / complaints land in the hourly counts with the beat;
    when the counts cannot be written, the beat is not recorded either (one transaction)."""
    store.upsert_nodes([make_node(ip_address="192.0.2.5"), make_node("acme-dallas-002")])
    rep = SqlReputationStore(store)
    t = clock.advance(30)
    beats = [
        beat("acme-dallas-001", t, sent=90, bounces=10, soft_bounces=4, complaints=1),
        beat("acme-dallas-001", t + timedelta(seconds=30), sent=10, bounces=0),
        beat("acme-dallas-002", t, sent=0, bounces=0),  # nothing to count
    ]
    assert store.record_heartbeats("acme", beats) == 3
    snapshot = rep.reputation_snapshot("acme", t - timedelta(hours=1), day_of(t))
    (bucket,) = snapshot.buckets["acme-dallas-001"]
    assert bucket.counts == SendCounts(sent=100, hard_bounces=10, soft_bounces=4, complaints=1)
    assert "acme-dallas-002" not in snapshot.buckets
    # a database that refuses the counts refuses the beat with them
    with store.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_counts BEFORE UPDATE ON node_send_counts "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_counts() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_counts BEFORE UPDATE ON node_send_counts "
                "FOR EACH ROW EXECUTE FUNCTION refuse_counts()"
            )
    before = {n.name: n.last_heartbeat for n in store.load_fleet("acme").nodes}
    later = t + timedelta(minutes=1)
    try:
        with pytest.raises(StoreError):
            store.record_heartbeats("acme", [beat("acme-dallas-001", later, sent=5, bounces=5)])
    finally:
        with store.engine.begin() as connection:
            connection.exec_driver_sql(
                "DROP TRIGGER refuse_counts"
                + ("" if connection.dialect.name == "sqlite" else " ON node_send_counts")
            )
            if connection.dialect.name != "sqlite":
                connection.exec_driver_sql("DROP FUNCTION refuse_counts()")
    after = {n.name: n.last_heartbeat for n in store.load_fleet("acme").nodes}
    assert after == before
    again = rep.reputation_snapshot("acme", t - timedelta(hours=1), day_of(t))
    assert again.buckets["acme-dallas-001"][0].counts == bucket.counts


def test_a_complaint_event_is_counted_once_across_daemons(
    store_url: str, store: SqlStore, clock: FakeClock
) -> None:
    """Two daemons (two stores on one database) receive the same complaint events (the
    platform retried, or sent to both): each event id counts once; events without an id count
    every time; a repeated id within one batch counts once."""
    store.upsert_node(make_node(ip_address="192.0.2.5"))
    other = open_store(store_url, clock=clock.now)
    try:
        first, second = SqlReputationStore(store), SqlReputationStore(other)
        now = clock.now()
        name = "acme-dallas-001"
        assert first.add_complaints(
            "acme", [(name, now, 1, "evt-1"), (name, now, 2, "evt-2"), (name, now, 1, "evt-1")], now
        ) == (3, 1)
        assert second.add_complaints(
            "acme", [(name, now, 1, "evt-1"), (name, now, 1, "evt-3"), (name, now, 1, None)], now
        ) == (2, 1)
        assert second.add_complaints("acme", [(name, now, 1, None)], now) == (1, 0)
        snapshot = first.reputation_snapshot("acme", now - timedelta(hours=1), day_of(now))
        assert snapshot.buckets[name][0].counts.complaints == 6
        # ids are forgotten with the counts they de-duplicate
        first.prune_send_counts(now + timedelta(days=8))
        assert second.add_complaints("acme", [(name, now, 1, "evt-1")], now) == (1, 0)
    finally:
        other.close()


def test_the_incremental_snapshot_equals_a_whole_read(
    store_url: str, store: SqlStore, clock: FakeClock
) -> None:
    """``reputation_snapshot_since``: following it through record saves, counts, a listing,
    a closed and a new node, another process's writes, the window moving past an hour and a
    prune (rows deleted: the row-count check makes it a whole read) equals a whole read each
    time."""
    other_store = open_store(store_url, clock=clock.now)
    try:
        names = ["acme-dallas-001", "acme-dallas-002", "acme-dallas-003"]
        for k, name in enumerate(names):
            store.upsert_node(make_node(name, ip_address=f"192.0.2.{k + 1}"))
        rep, other = SqlReputationStore(store), SqlReputationStore(other_store)
        now = clock.now()
        held, cursor = rep.reputation_snapshot_since("acme", now, day_of(now), None, None)
        assert (cursor is not None) == store_url.startswith("postgresql")

        def record(name: str, score: str) -> ReputationRecord:
            return ReputationRecord(name, IpState.WARMING, reasons=score)

        steps = [
            lambda: rep.save_reputation("acme", [record(names[0], "a")], [], {ZEN: 2}, now),
            lambda: other.add_send_counts("acme", [(names[1], now, SendCounts(sent=5))]),
            lambda: rep.add_send_counts("acme", [(names[1], now, SendCounts(complaints=1))]),
            lambda: other.save_reputation(
                "acme", [record(names[1], "b"), record(names[0], "c")], [], {}, now
            ),
            lambda: rep.save_reputation(
                "acme", [], [ListingEvent("listed", listing(clock), now)], {}, now
            ),
            lambda: other.add_send_counts(
                "acme", [(names[2], now + timedelta(hours=1), SendCounts(sent=7))]
            ),
            lambda: store.close_node("acme", names[1], clock.now()),
            lambda: other_store.upsert_node(make_node("acme-dallas-004", id=str(uuid.uuid4()))),
            lambda: other.save_reputation("acme", [record("acme-dallas-004", "d")], [], {}, now),
            lambda: other.prune_send_counts(now + timedelta(hours=1)),
            lambda: other.add_send_counts(
                "acme", [(names[0], now + timedelta(hours=2), SendCounts(sent=1))]
            ),
            # a prune of rows still inside the window: only the row counts tell
            lambda: other.prune_send_counts(now + timedelta(hours=3)),
        ]
        for step in steps:
            step()
            at = clock.advance(1200)
            since = at - timedelta(hours=2)
            held, cursor = rep.reputation_snapshot_since("acme", since, day_of(at), held, cursor)
            assert held == rep.reputation_snapshot("acme", since, day_of(at))
    finally:
        other_store.close()
