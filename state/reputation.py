"""The reputation store (``reconciler.core.ports.ReputationStorePort``) on a ``SqlStore``'s
engine: node reputation states, blocklist listings with their hysteresis (the seeds'
ip_blocklist_events), hourly sending counts and DNSBL queries per zone and day.

A snapshot is four queries whatever the fleet size; a save is one transaction (fenced by the
leader's epoch like every daemon write).
"""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from reconciler.core.reputation import (
    CountBucket,
    IpState,
    ListingEvent,
    ListingState,
    ReputationRecord,
    ReputationSnapshot,
    SendCounts,
    hour_of,
)
from specs.blocklists import ListingAction, Severity
from state import models as m
from state.store import (
    _PG_SNAPSHOT_XMIN,
    SqlStore,
    _aware,
    _chunks,
    _insert_for,
    _upsert_stmt,
    add_send_counts,
    normalise_ip,
)


class SqlReputationStore:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SqlReputationStore({self._store.url})"

    def _nodes(self, connection: Connection, fleet: str) -> dict[str, uuid.UUID]:
        rows = connection.execute(
            sa.select(m.SendingNode.name, m.SendingNode.id).where(
                m.SendingNode.fleet == fleet, m.SendingNode.closed_at.is_(None)
            )
        ).all()
        return {row.name: row.id for row in rows}

    # --- reading -------------------------------------------------------------------------

    def reputation_snapshot(
        self, fleet: str, since: datetime, today: datetime
    ) -> ReputationSnapshot:
        since, today = _aware(since, "since"), _aware(today, "today")
        with self._store._tx(f"reading the reputation of {fleet!r}") as connection:
            return _read_snapshot(connection, fleet, since, today)

    def reputation_snapshot_since(
        self,
        fleet: str,
        since: datetime,
        today: datetime,
        held: ReputationSnapshot | None,
        cursor: object | None,
    ) -> tuple[ReputationSnapshot, object | None]:
        """On PostgreSQL, with the snapshot and cursor of the previous call: the records and
        hourly counts written since that call began (``xmin``, as ``SqlStore.node_marks_since``)
        and the nodes closed since, merged into ``held``; the listings and today's queries
        (a few rows) read whole. The merge is checked against the numbers of record and count
        rows the store holds now (one query): a row deleted (a prune) or anything the merge
        missed makes it a whole read. Without a cursor, and on SQLite, a whole read."""
        since, today = _aware(since, "since"), _aware(today, "today")
        with self._store._tx(f"reading the reputation of {fleet!r}") as connection:
            if connection.dialect.name != "postgresql":
                return _read_snapshot(connection, fleet, since, today), None
            now = int(connection.execute(_PG_SNAPSHOT_XMIN).scalar_one())
            if held is None or not isinstance(cursor, int):
                return _read_snapshot(connection, fleet, since, today), now
            xid = str(cursor % 2**32)
            node = m.SendingNode
            hour = hour_of(since)
            records = connection.execute(
                _snapshot_records(fleet).where(_changed_since("node_reputation", xid))
            ).all()
            closed = (
                connection.execute(
                    sa.select(node.name).where(
                        node.fleet == fleet,
                        node.closed_at.is_not(None),
                        _changed_since("sending_nodes", xid),
                    )
                )
                .scalars()
                .all()
            )
            counts = connection.execute(
                _snapshot_counts(fleet, hour).where(_changed_since("node_send_counts", xid))
            ).all()
            total_records, total_counts = connection.execute(
                _PG_REPUTATION_TOTALS, {"fleet": fleet, "hour": hour}
            ).one()
            listings = connection.execute(_snapshot_listings(fleet)).all()
            queries = connection.execute(_snapshot_queries(today)).all()
            merged_records = {
                name: record for name, record in held.records.items() if name not in closed
            }
            merged_records.update((row.name, _record_out(row.name, row)) for row in records)
            by_node: dict[str, dict[datetime, CountBucket]] = {}
            for name, series in held.buckets.items():
                if name not in closed:
                    kept = {b.start: b for b in series if b.start >= hour}
                    if kept:
                        by_node[name] = kept
            for row in counts:
                by_node.setdefault(row.name, {})[row.hour] = _bucket_out(row)
            if len(merged_records) != total_records or sum(
                len(series) for series in by_node.values()
            ) != int(total_counts):
                return _read_snapshot(connection, fleet, since, today), now
        buckets = {
            name: tuple(series[at] for at in sorted(series)) for name, series in by_node.items()
        }
        return (
            ReputationSnapshot(
                records=merged_records,
                listings=tuple(_listing_out(row) for row in listings),
                buckets=buckets,
                sent_today=_sent_today(buckets, today),
                queries_today={row.zone: int(row.queries) for row in queries},
            ),
            now,
        )

    def listing_history(self, fleet: str, limit: int = 100) -> list[dict[str, str]]:
        """Listings of the fleet's nodes, newest first (open and closed)."""
        node = m.SendingNode
        with self._store._tx("reading blocklist history") as connection:
            rows = connection.execute(
                sa.select(m.IpBlocklistEvent, node.name.label("node"))
                .join(node, node.id == m.IpBlocklistEvent.node_id)
                .where(node.fleet == fleet)
                .order_by(m.IpBlocklistEvent.listed_at.desc(), m.IpBlocklistEvent.id.desc())
                .limit(limit)
            ).all()
        return [
            {
                "node": row.node,
                "ip_address": row.ip_address,
                "zone": row.zone,
                "codes": row.codes or "",
                "listing": row.listing or "",
                "listed_at": row.listed_at.isoformat(),
                "delisted_at": (row.delisted_at.isoformat() if row.delisted_at else ""),
                "details": row.details or "",
            }
            for row in rows
        ]

    # --- writing -------------------------------------------------------------------------

    def save_reputation(
        self,
        fleet: str,
        records: Sequence[ReputationRecord],
        events: Sequence[ListingEvent],
        queries: Mapping[str, int],
        at: datetime,
        *,
        epoch: int | None = None,
    ) -> None:
        at = _aware(at, "at")
        with self._store._tx(f"saving the reputation of {fleet!r}") as connection:
            self._store._fence(connection, fleet, epoch)
            ids = self._nodes(connection, fleet)
            by_ip = self._node_ips(connection, fleet)
            rows = [
                {"node_id": ids[record.node], **_record_params(record, at)}
                for record in records
                if record.node in ids
            ]
            if rows:
                # one statement run for every row (a statement built per node cost ~0.5 ms of
                # CPU each: seconds per assessment of 10,000 nodes, beside the heartbeat intake)
                connection.execute(_reputation_upsert(connection.dialect.name), rows)
            for event in events:
                self._event(connection, event, by_ip)
            day = at.date().isoformat()
            for zone, count in sorted(queries.items()):
                if count <= 0:
                    continue
                upsert = _upsert_stmt(connection, m.DnsblQueryCount).values(
                    zone=zone, day=day, queries=count
                )
                connection.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["zone", "day"],
                        set_={"queries": m.DnsblQueryCount.queries + upsert.excluded.queries},
                    )
                )

    def _node_ips(self, connection: Connection, fleet: str) -> dict[str, uuid.UUID]:
        rows = connection.execute(
            sa.select(m.SendingNode.ip_address, m.SendingNode.id).where(
                m.SendingNode.fleet == fleet,
                m.SendingNode.closed_at.is_(None),
                m.SendingNode.ip_address.is_not(None),
            )
        ).all()
        return {row.ip_address: row.id for row in rows}

    @staticmethod
    def _event(connection: Connection, event: ListingEvent, by_ip: Mapping[str, uuid.UUID]) -> None:
        state = event.state
        ip = normalise_ip(state.ip)
        events = m.IpBlocklistEvent
        open_row = sa.and_(
            events.ip_address == ip, events.zone == state.zone, events.delisted_at.is_(None)
        )
        details = {
            "codes": ",".join(state.codes)[:200],
            "listing": state.listing[:60],
            "severity": state.severity.value,
            "action": state.action.value,
            "clean_checks": state.clean_checks,
            "first_clean_at": state.first_clean_at,
        }
        if event.kind == "listed":
            existing = connection.execute(sa.select(events.id).where(open_row)).first()
            if existing is not None:
                connection.execute(
                    sa.update(events).where(events.id == existing.id).values(**details)
                )
                return
            connection.execute(
                sa.insert(events).values(
                    node_id=by_ip.get(ip),
                    ip_address=ip,
                    zone=state.zone,
                    listed_at=_aware(state.listed_at, "listed_at"),
                    details=(
                        f"{state.listing} ({', '.join(state.codes)}), severity "
                        f"{state.severity.value}, action {state.action.value}"
                    ),
                    **details,
                )
            )
        elif event.kind == "changed":
            connection.execute(sa.update(events).where(open_row).values(**details))
        elif event.kind == "delisted":
            connection.execute(
                sa.update(events)
                .where(open_row)
                .values(delisted_at=_aware(event.at, "delisted_at"), **details)
            )

    def add_send_counts(
        self, fleet: str, counts: Sequence[tuple[str, datetime, SendCounts]]
    ) -> int:
        merged: dict[tuple[str, datetime], SendCounts] = {}
        for name, at, value in counts:
            key = (name, hour_of(_aware(at, "hour")))
            merged[key] = merged.get(key, SendCounts()) + value
        if not merged:
            return 0
        with self._store._tx(f"adding sending counts of {fleet!r}") as connection:
            return self._add(connection, fleet, merged)

    def _add(
        self, connection: Connection, fleet: str, merged: Mapping[tuple[str, datetime], SendCounts]
    ) -> int:
        ids = self._nodes(connection, fleet)
        rows = {
            (ids[name], hour): (v.sent, v.hard_bounces, v.soft_bounces, v.complaints)
            for (name, hour), v in merged.items()
            if name in ids
        }
        return add_send_counts(connection, rows)

    def add_complaints(
        self,
        fleet: str,
        complaints: Sequence[tuple[str, datetime, int, str | None]],
        seen_at: datetime,
    ) -> tuple[int, int]:
        """Count complaints (node, at, count, event id) in one transaction; an event id any
        daemon of this store has counted before is skipped (``complaint_events``). Returns
        (complaints recorded, duplicates skipped)."""
        seen_at = _aware(seen_at, "seen_at")
        with self._store._tx(f"adding complaints of {fleet!r}") as connection:
            ids = sorted({e[:200] for _, _, _, e in complaints if e})
            fresh: set[str] = set()
            for chunk in _chunks(ids):
                stmt = (
                    _upsert_stmt(connection, m.ComplaintEvent)
                    .values([{"fleet": fleet, "event_id": e, "seen_at": seen_at} for e in chunk])
                    .on_conflict_do_nothing()
                    .returning(m.ComplaintEvent.event_id)
                )
                fresh.update(connection.execute(stmt).scalars())
            merged: dict[tuple[str, datetime], SendCounts] = {}
            duplicates = 0
            used: set[str] = set()
            for name, at, count, event_id in complaints:
                if event_id:
                    key_id = event_id[:200]
                    if key_id not in fresh or key_id in used:
                        duplicates += 1
                        continue
                    used.add(key_id)
                key = (name, hour_of(_aware(at, "at")))
                merged[key] = merged.get(key, SendCounts()) + SendCounts(complaints=count)
            self._add(connection, fleet, merged)
        recorded = sum(v.complaints for v in merged.values())
        return recorded, duplicates

    def resume_reputation(self, fleet: str, node: str, at: datetime) -> bool:
        at = _aware(at, "at")
        with self._store._tx(f"resuming {node}") as connection:
            node_id = self._nodes(connection, fleet).get(node)
            if node_id is None:
                return False
            result = connection.execute(
                sa.update(m.NodeReputation)
                .where(m.NodeReputation.node_id == node_id)
                .values(
                    quarantine=None,
                    quarantined_at=None,
                    paused_at=None,
                    rates_since=at,
                    updated_at=at,
                )
            )
        return bool(result.rowcount)

    def prune_send_counts(self, older_than: datetime) -> int:
        with self._store._tx("pruning sending counts") as connection:
            result = connection.execute(
                sa.delete(m.NodeSendCount).where(
                    m.NodeSendCount.hour < _aware(older_than, "older_than")
                )
            )
            # complaint ids older than the counts they de-duplicate are not needed any more
            connection.execute(
                sa.delete(m.ComplaintEvent).where(
                    m.ComplaintEvent.seen_at < _aware(older_than, "older_than")
                )
            )
        return int(result.rowcount)


def _snapshot_records(fleet: str) -> Any:
    node = m.SendingNode
    return (
        sa.select(node.name, m.NodeReputation)
        .join(m.NodeReputation, m.NodeReputation.node_id == node.id)
        .where(node.fleet == fleet, node.closed_at.is_(None))
    )


def _snapshot_listings(fleet: str) -> Any:
    node = m.SendingNode
    return (
        sa.select(m.IpBlocklistEvent)
        .join(node, node.id == m.IpBlocklistEvent.node_id)
        .where(
            node.fleet == fleet,
            node.closed_at.is_(None),
            m.IpBlocklistEvent.delisted_at.is_(None),
        )
        .order_by(m.IpBlocklistEvent.id)
    )


def _snapshot_counts(fleet: str, hour: datetime) -> Any:
    node = m.SendingNode
    return (
        sa.select(node.name, m.NodeSendCount)
        .join(m.NodeSendCount, m.NodeSendCount.node_id == node.id)
        .where(node.fleet == fleet, node.closed_at.is_(None), m.NodeSendCount.hour >= hour)
    )


def _snapshot_queries(today: datetime) -> Any:
    return sa.select(m.DnsblQueryCount.zone, m.DnsblQueryCount.queries).where(
        m.DnsblQueryCount.day == today.date().isoformat()
    )


def _read_snapshot(
    connection: Connection, fleet: str, since: datetime, today: datetime
) -> ReputationSnapshot:
    records = connection.execute(_snapshot_records(fleet)).all()
    listings = connection.execute(_snapshot_listings(fleet)).all()
    counts = connection.execute(_snapshot_counts(fleet, hour_of(since))).all()
    queries = connection.execute(_snapshot_queries(today)).all()
    buckets: dict[str, list[CountBucket]] = defaultdict(list)
    for row in counts:
        buckets[row.name].append(_bucket_out(row))
    ordered = {name: tuple(sorted(b, key=lambda x: x.start)) for name, b in buckets.items()}
    return ReputationSnapshot(
        records={row.name: _record_out(row.name, row) for row in records},
        listings=tuple(_listing_out(row) for row in listings),
        buckets=ordered,
        sent_today=_sent_today(ordered, today),
        queries_today={row.zone: int(row.queries) for row in queries},
    )


def _bucket_out(row: Any) -> CountBucket:
    return CountBucket(
        row.hour,
        SendCounts(
            int(row.sent), int(row.hard_bounces), int(row.soft_bounces), int(row.complaints)
        ),
    )


def _sent_today(buckets: Mapping[str, Sequence[CountBucket]], today: datetime) -> dict[str, int]:
    """Per node with a count today: what it attempted since ``today``."""
    sent: dict[str, int] = {}
    for name, series in buckets.items():
        todays = [b.counts.attempts for b in series if b.start >= today]
        if todays:
            sent[name] = sum(todays)
    return sent


def _changed_since(table: str, xid: str) -> sa.TextClause:
    """Rows of ``table`` whose version was written by a transaction not older than ``xid``."""
    return sa.text(f"age({table}.xmin) <= age(CAST(:since AS xid))").bindparams(since=xid)


#: the record rows and the count rows a whole snapshot would read now
_PG_REPUTATION_TOTALS = sa.text(
    "SELECT (SELECT count(*) FROM node_reputation r JOIN sending_nodes n ON n.id = r.node_id "
    "WHERE n.fleet = :fleet AND n.closed_at IS NULL), "
    "(SELECT count(*) FROM node_send_counts c JOIN sending_nodes n ON n.id = c.node_id "
    "WHERE n.fleet = :fleet AND n.closed_at IS NULL AND c.hour >= :hour)"
)


@functools.cache
def _reputation_upsert(dialect: str) -> Any:
    """``node_reputation``'s upsert, built once: every column but the key from the row."""
    table = m.NodeReputation
    stmt = _insert_for(dialect, table)
    return stmt.on_conflict_do_update(
        index_elements=[table.node_id],
        set_={column: getattr(stmt.excluded, column) for column in _REPUTATION_COLUMNS},
    )


_REPUTATION_COLUMNS = (
    "ip_state",
    "quarantine",
    "quarantined_at",
    "paused_at",
    "rates_since",
    "warmup_held_since",
    "reasons",
    "updated_at",
)


def _record_params(record: ReputationRecord, at: datetime) -> dict[str, Any]:
    return {
        "ip_state": record.ip_state.value,
        "quarantine": record.quarantine,
        "quarantined_at": record.quarantined_at,
        "paused_at": record.paused_at,
        "rates_since": record.rates_since,
        "warmup_held_since": record.warmup_held_since,
        "reasons": (record.reasons or "")[:2000] or None,
        "updated_at": at,
    }


def _record_out(name: str, row: Any) -> ReputationRecord:
    return ReputationRecord(
        node=name,
        ip_state=IpState(row.ip_state),
        quarantine=row.quarantine,
        quarantined_at=row.quarantined_at,
        paused_at=row.paused_at,
        rates_since=row.rates_since,
        warmup_held_since=row.warmup_held_since,
        reasons=row.reasons,
    )


def _listing_out(row: Any) -> ListingState:
    codes = tuple(c for c in (row.codes or "").split(",") if c)
    return ListingState(
        ip=row.ip_address,
        zone=row.zone,
        listed_at=row.listed_at,
        codes=codes,
        listing=row.listing or "listed",
        severity=Severity(row.severity) if row.severity else Severity.HIGH,
        action=ListingAction(row.action) if row.action else ListingAction.PAUSE,
        clean_checks=int(row.clean_checks),
        first_clean_at=row.first_clean_at,
    )
