"""The reputation store on SQLite and PostgreSQL: listings with hysteresis, node states,
hourly counts, DNSBL query counts, an operator's resume, fencing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from state_builders import FakeClock, make_node

from reconciler.core.errors import LeadershipLostError
from reconciler.core.reputation import (
    IpState,
    ListingEvent,
    ListingState,
    ReputationRecord,
    SendCounts,
    day_of,
)
from specs.blocklists import ListingAction, Severity
from state import SqlStore
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
