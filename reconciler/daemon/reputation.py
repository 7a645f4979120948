"""The daemon's reputation job: blocklist checks, rates, warmup safety, the sending rotation.

Every ``reputation.check_interval`` (stretched by the zones' daily budgets) the leader

1. reads the reputation snapshot (states, open listings, hourly counts, today's queries);
2. checks the fleet's IPs on every zone (``providers.dnsbl`` through ``BlocklistChecker``),
   after the zones' RFC 5782 probes, with the budgets seeded from today's recorded queries;
3. steps each (IP, zone) listing through the hysteresis and assesses each node
   (``core.reputation.assess_node``): pause, quarantine, warmup hold, IP state, alerts;
4. saves states, listing events and the queries spent in one fenced transaction, and moves the
   warmup start of a node whose hold ended (the warmup resumes on the day it stopped).

Between blocklist checks the job re-assesses rates every sweep (bounces and complaints move
faster than listings). The rotation (``GET /v1/rotation``) is built from the latest
assessments: a paused or quarantined node leaves it at the next assessment, which is what
"out of rotation" means in this product.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from reconciler.core.fleet import NodeStatus, RecordedFleet, RecordedNode
from reconciler.core.health import AlertCondition
from reconciler.core.health import Severity as AlertSeverity
from reconciler.core.lifecycle import held_by_operator
from reconciler.core.ports import ReputationStorePort, StorePort
from reconciler.core.reputation import (
    IpVerdict,
    ListingEvent,
    ListingState,
    NodeReputation,
    NodeReputationInput,
    ReputationRecord,
    ReputationSnapshot,
    RotationCandidate,
    RotationEntry,
    ZoneProbe,
    ZoneVerdict,
    assess_node,
    check_interval,
    compile_rules,
    day_of,
    released_warmup_start,
    rewarm_due,
    rotation,
    step_listing,
)
from specs.model import FleetSpec, ReputationPolicy, WarmupSchedule

log = logging.getLogger("reconciler.daemon.reputation")

#: the store keeps this many characters of a record's reasons (``state.reputation``)
MAX_REASONS = 2000

#: the reputation snapshot is read whole at least this often (a net under the incremental
#: reads, which are checked against the store's row counts at every read)
WHOLE_READ_EVERY = timedelta(minutes=10)

#: nodes whose IPs are checked (a node being built has no sending history to protect yet)
CHECKED = frozenset(
    {
        NodeStatus.WARMING,
        NodeStatus.ACTIVE,
        NodeStatus.PAUSED,
        NodeStatus.UNHEALTHY,
        NodeStatus.MAINTENANCE,
        NodeStatus.DRAINING,
    }
)


class BlocklistChecker(Protocol):
    """What the job needs of ``providers.dnsbl.DnsblChecker``."""

    async def check(
        self, ips: Sequence[str], zones: Any = None
    ) -> tuple[dict[str, ZoneProbe], list[IpVerdict]]: ...

    def seed_budget(self, zone: str, day: Any, used: int) -> None: ...

    def stats(self) -> Mapping[str, Any]: ...

    async def aclose(self) -> None: ...


def schedule_of(spec: FleetSpec, node: RecordedNode) -> WarmupSchedule | None:
    name = "standard"
    if node.pool is not None and node.pool in spec.ip_pools:
        name = spec.ip_pools[node.pool].warmup
    return spec.warmup.schedule(name)


@dataclass
class ReputationView:
    """The latest assessment, as HTTP and the sweep read it."""

    at: datetime | None = None
    nodes: dict[str, NodeReputation] = field(default_factory=dict)
    probes: dict[str, ZoneProbe] = field(default_factory=dict)
    conditions: tuple[AlertCondition, ...] = ()
    last_blocklist_check: datetime | None = None
    interval: timedelta | None = None
    interval_reason: str = ""
    #: DNSBL queries the last run sent, per zone
    queries: dict[str, int] = field(default_factory=dict)
    #: a check was due but no resolver is named
    unchecked: bool = False


class ReputationJob:
    def __init__(
        self,
        fleet: str,
        store: StorePort,
        reputation: ReputationStorePort,
        checker_factory: Callable[[FleetSpec], BlocklistChecker | None] | None,
    ) -> None:
        self.fleet = fleet
        self._store = store
        self._reputation = reputation
        self._factory = checker_factory
        self.view = ReputationView()
        self._assessments = AssessmentCache()
        #: the last snapshot read and where the next read starts (``reputation_snapshot_since``:
        #: only what changed since); forgotten on a store error and every ``WHOLE_READ_EVERY``
        self._held: ReputationSnapshot | None = None
        self._cursor: object | None = None
        self._whole_at: datetime | None = None

    def due(self, spec: FleetSpec, ips: int, now: datetime) -> bool:
        decision = check_interval(spec.reputation, ips, compile_rules(spec.reputation))
        self.view.interval, self.view.interval_reason = decision.interval, decision.reason
        last = self.view.last_blocklist_check
        return last is None or now - last >= decision.interval

    async def run(
        self,
        spec: FleetSpec,
        recorded: RecordedFleet,
        now: datetime,
        *,
        epoch: int | None,
        force_blocklists: bool = False,
    ) -> ReputationView:
        """One assessment (with a blocklist check when due). Writes only with an epoch."""
        policy = spec.reputation
        if self._whole_at is None or not now - WHOLE_READ_EVERY < self._whole_at <= now:
            self._held, self._cursor, self._whole_at = None, None, now
        try:
            snapshot, self._cursor = await asyncio.to_thread(
                self._reputation.reputation_snapshot_since,
                self.fleet,
                now - policy.max_window - timedelta(hours=1),
                day_of(now),
                self._held,
                self._cursor,
            )
        except BaseException:
            self._held, self._cursor, self._whole_at = None, None, None
            raise
        self._held = snapshot
        nodes = [n for n in recorded.nodes if n.status in CHECKED and n.ip_address]
        listings: dict[tuple[str, str], ListingState] = {
            (s.ip, s.zone): s for s in snapshot.listings
        }
        events: list[ListingEvent] = []
        queries: dict[str, int] = {}
        checked_blocklists = False
        blocklists_due = (
            self._factory is not None
            and bool(nodes)
            and epoch is not None
            and (force_blocklists or self.due(spec, len(nodes), now))
        )
        checker = self._factory(spec) if blocklists_due and self._factory is not None else None
        unchecked = blocklists_due and checker is None
        if checker is not None:
            ips = [n.ip_address for n in nodes if n.ip_address]
            verdicts, probes, queries = await self._check(checker, ips, snapshot.queries_today, now)
            checked_blocklists = True
            self.view.probes = probes
            self.view.last_blocklist_check = now
            for verdict in verdicts:
                for zone_verdict in verdict.zones:
                    events.extend(self._step(listings, zone_verdict, now, policy.delist_after))
        by_ip: dict[str, list[ListingState]] = {}
        for state in listings.values():
            by_ip.setdefault(state.ip, []).append(state)
        assessments: dict[str, NodeReputation] = {}
        #: per pool: its warmup schedule (one look-up per pool, not per node)
        schedules: dict[str | None, WarmupSchedule | None] = {}
        records: list[ReputationRecord] = []
        moved: list[RecordedNode] = []
        for node in nodes:
            before = snapshot.records.get(node.name)
            warmup_started = node.warmup_started_at
            if node.pool in schedules:
                schedule = schedules[node.pool]
            else:
                schedule = schedules[node.pool] = schedule_of(spec, node)
            assessment = self._assessments.assess(
                NodeReputationInput(
                    name=node.name,
                    ip=node.ip_address,
                    status=node.status,
                    schedule=schedule,
                    warmup_started_at=warmup_started,
                    warmup_held_since=before.warmup_held_since if before else None,
                    listings=tuple(by_ip.get(node.ip_address or "", ())),
                    quarantine=before.quarantine if before else None,
                    rates_since=before.rates_since if before else None,
                    buckets=snapshot.buckets.get(node.name, ()),
                    sent_today=snapshot.sent_today.get(node.name, 0),
                ),
                policy,
                now,
            )
            assessments[node.name] = assessment
            record, new_start = self._record(node, before, assessment, now, spec)
            if before is None or _stored(record) != before:
                # only what changed is written: rewriting every node's row each run (10,000
                # rows every 30 s) was most of the job's cost at rest (issue 14)
                records.append(record)
            if new_start is not None and new_start != warmup_started:
                moved.append(dataclasses.replace(node, warmup_started_at=new_start))
        conditions = [c for a in assessments.values() for c in a.alerts]
        for zone, probe in sorted(self.view.probes.items()):
            if not probe.usable:
                conditions.append(
                    AlertCondition(
                        f"zone:{zone}",
                        AlertSeverity.MEDIUM,
                        None,
                        f"blocklist {zone} is unusable: {probe.reason}; its verdicts are "
                        "unknown, nothing is paused for it",
                    )
                )
        if unchecked:
            self.view.unchecked = True
        elif checked_blocklists:
            self.view.unchecked = False
        if self.view.unchecked:
            conditions.append(
                AlertCondition(
                    "blocklists:unchecked",
                    AlertSeverity.LOW,
                    None,
                    "blocklists are not checked: no resolver is named (set "
                    "reputation.resolver or RECONCILER_DNSBL_RESOLVER to your own recursive "
                    "resolver; the daemon never uses one nobody named)",
                )
            )
        self._assessments.keep_only(assessments)
        self.view.nodes = assessments
        self.view.queries = queries
        self.view.conditions = tuple(conditions)
        self.view.at = now
        if epoch is not None and (records or events or any(queries.values())):
            await asyncio.to_thread(
                self._reputation.save_reputation,
                self.fleet,
                records,
                events,
                queries,
                now,
                epoch=epoch,
            )
            if moved:
                await asyncio.to_thread(self._store.upsert_nodes, moved, epoch=epoch)
        for event in events:
            if event.kind in ("listed", "delisted"):
                log.warning(
                    f"{event.state.ip} {event.kind} on {event.state.zone} "
                    f"({event.state.listing}, {', '.join(event.state.codes)})",
                    extra={
                        "event": f"reputation.{event.kind}",
                        "zone": event.state.zone,
                        "ip": event.state.ip,
                    },
                )
        if checked_blocklists:
            log.info(
                f"blocklists checked: {len(nodes)} IPs, "
                + ", ".join(f"{z} {n} queries" for z, n in sorted(queries.items())),
                extra={"event": "reputation.checked", "ips": len(nodes)},
            )
        return self.view

    @staticmethod
    async def _check(
        checker: BlocklistChecker, ips: list[str], spent: Mapping[str, int], now: datetime
    ) -> tuple[list[IpVerdict], dict[str, ZoneProbe], dict[str, int]]:
        try:
            for zone, used in spent.items():
                checker.seed_budget(zone, now.date(), used)
            probes, verdicts = await checker.check(ips)
            queries = {zone: int(s.queries) for zone, s in checker.stats().items()}
        finally:
            await checker.aclose()
        return verdicts, probes, queries

    @staticmethod
    def _step(
        listings: dict[tuple[str, str], ListingState],
        verdict: ZoneVerdict,
        now: datetime,
        delist_after: int,
    ) -> list[ListingEvent]:
        key = (verdict.ip, verdict.zone)
        state, event = step_listing(listings.get(key), verdict, now, delist_after)
        if state is None:
            listings.pop(key, None)
        else:
            listings[key] = state
        return [event] if event is not None else []

    @staticmethod
    def _record(
        node: RecordedNode,
        before: ReputationRecord | None,
        assessment: NodeReputation,
        now: datetime,
        spec: FleetSpec,
    ) -> tuple[ReputationRecord, datetime | None]:
        """The node's new record, and its new warmup start when a hold ended or a long
        pause re-warms it (None: unchanged)."""
        held_since = before.warmup_held_since if before else None
        paused_at = before.paused_at if before else None
        new_start: datetime | None = None
        if assessment.hold_warmup:
            held_since = held_since or now
        elif held_since is not None and node.warmup_started_at is not None:
            new_start = released_warmup_start(node.warmup_started_at, held_since, now)
            held_since = None
        if assessment.pause:
            paused_at = paused_at or now
        elif paused_at is not None:
            if rewarm_due(paused_at, now, spec.reputation):
                new_start, held_since = now, None  # a long pause: warm the IP up again
            paused_at = None
        quarantine = assessment.quarantine
        quarantined_at = before.quarantined_at if before and before.quarantine else None
        if quarantine is not None and quarantined_at is None:
            quarantined_at = now
        record = ReputationRecord(
            node=node.name,
            ip_state=assessment.ip_state,
            quarantine=quarantine,
            quarantined_at=quarantined_at if quarantine else None,
            paused_at=paused_at,
            rates_since=before.rates_since if before else None,
            warmup_held_since=held_since,
            reasons="; ".join(assessment.pause_reasons + assessment.hold_reasons) or None,
        )
        return record, new_start

    def rotation(
        self, recorded: RecordedFleet, unhealthy: frozenset[str]
    ) -> tuple[RotationEntry, ...]:
        return rotation(
            RotationCandidate(
                name=node.name,
                ip=node.ip_address,
                region=node.region,
                pool=node.pool,
                # an operator's cordon or drain counts at once, before the reconcile
                status=NodeStatus.MAINTENANCE if held_by_operator(node) else node.status,
                unhealthy=node.name in unhealthy or node.status is NodeStatus.UNHEALTHY,
                reputation=self.view.nodes.get(node.name),
            )
            for node in recorded.nodes
        )


class AssessmentCache:
    """``assess_node`` for the job's repeated runs: a node's assessment is kept while its
    input is equal and ``now`` stays before the first moment the result could change
    (``steady_until``); the result equals ``assess_node(node, policy, now)``. At rest most
    nodes' inputs do not move between runs, so a run re-assesses only what changed (issue 14).
    """

    def __init__(self) -> None:
        #: name -> (input, policy, assessed at, valid until, assessment)
        self._entries: dict[
            str,
            tuple[NodeReputationInput, ReputationPolicy, datetime, datetime, NodeReputation],
        ] = {}

    def assess(
        self, node: NodeReputationInput, policy: ReputationPolicy, now: datetime
    ) -> NodeReputation:
        entry = self._entries.get(node.name)
        if (
            entry is not None
            and entry[1] is policy
            and entry[2] <= now < entry[3]
            and entry[0] == node
        ):
            return entry[4]
        assessment = assess_node(node, policy, now)
        until = steady_until(node, policy, now)
        if until is not None and until > now:
            self._entries[node.name] = (node, policy, now, until, assessment)
        else:
            self._entries.pop(node.name, None)
        return assessment

    def keep_only(self, names: Collection[str]) -> None:
        for name in [name for name in self._entries if name not in names]:
            del self._entries[name]


def steady_until(
    node: NodeReputationInput, policy: ReputationPolicy, now: datetime
) -> datetime | None:
    """The first moment after ``now`` at which ``assess_node(node, policy, t)`` may differ
    from its result at ``now`` (None: it may change at any moment: no reuse). ``now`` enters
    the assessment through the warmup day (whole days since the start, frozen while held) and
    the rate windows (which hourly buckets are inside ``window`` / ``max_window``, and the
    span of a window stretched over older buckets, which moves with ``now``)."""
    until: datetime | None = None

    def earlier(moment: datetime) -> None:
        nonlocal until
        if until is None or moment < until:
            until = moment

    started, held = node.warmup_started_at, node.warmup_held_since
    if started is not None and (held is None or held > now):
        # the day advances until the hold begins (a hold still ahead freezes nothing yet)
        elapsed = max(now - started, timedelta(0))
        earlier(started + (elapsed // _DAY + 1) * _DAY)
        if held is not None:
            earlier(held)
    since = node.rates_since
    base = now - policy.window
    limit = now - policy.max_window
    in_window = 0
    stretched = False  # a bucket older than the window that a stretched window would visit
    for bucket in node.buckets:
        start = bucket.start
        if since is not None and start < since:
            continue  # never counted
        if start > now:
            earlier(start)  # counts from then on
            continue
        if start >= base:
            in_window += bucket.counts.attempts
            earlier(start + policy.window)
            earlier(start + policy.max_window)
        elif start >= limit:
            stretched = True
            earlier(start + policy.max_window)
    if stretched and in_window < policy.min_volume:
        return None  # the stretched window's span moves with now
    return until if until is not None else now + _FOREVER


_DAY = timedelta(days=1)
#: how long an assessment that no clock can change is kept (its input still compared)
_FOREVER = timedelta(days=3650)


def _stored(record: ReputationRecord) -> ReputationRecord:
    """``record`` as the store gives it back (its reasons cut to the column's length), so an
    unchanged record compares equal to the one read."""
    if record.reasons is not None and len(record.reasons) > MAX_REASONS:
        return dataclasses.replace(record, reasons=record.reasons[:MAX_REASONS])
    return record


def rotation_document(
    fleet: str, entries: Sequence[RotationEntry], at: datetime, assessed_at: datetime | None
) -> dict[str, Any]:
    return {
        "format_version": 1,
        "fleet": fleet,
        "generated_at": at.isoformat(),
        "assessed_at": assessed_at.isoformat() if assessed_at else None,
        "nodes": [
            {
                "node": e.node,
                "ip": e.ip,
                "region": e.region,
                "pool": e.pool,
                "status": e.status.value,
                "ip_state": e.ip_state.value,
                "daily_limit": e.daily_limit,
                "sent_today": e.sent_today,
                "remaining_today": e.remaining,
            }
            for e in entries
        ],
    }
