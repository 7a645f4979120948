"""The fleet as ``reconcile status`` and ``GET /v1/fleet`` show it, and the autoscaler's inputs.

Everything here is computed from the spec, the recorded fleet, the recent heartbeats and
``now``; nothing is fetched. The JSON document is versioned (``format_version``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from reconciler.core.costs import CostResolver, cents
from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedFleet, RecordedNode
from reconciler.core.health import Grade, HealthAssessment, HealthReport, assess, grade_beats
from reconciler.core.scaling import (
    PLAUSIBLE_CAPACITY_FACTOR,
    NodeLoad,
    ScalingDecision,
    Utilization,
    cpu_capacity_per_day,
    node_capacity_per_day,
    utilization_by,
)
from reconciler.core.warmup import daily_limit, warmup_complete, warmup_day
from specs.model import FleetSpec, WarmupSchedule

FORMAT_VERSION = 1
DEFAULT_WARMUP = "standard"
#: nodes counted in a region's current size
COUNTED = frozenset(
    {
        NodeStatus.PROVISIONING,
        NodeStatus.WARMING,
        NodeStatus.ACTIVE,
        NodeStatus.PAUSED,
        NodeStatus.MAINTENANCE,
        NodeStatus.UNHEALTHY,
    }
)


def schedule_for(spec: FleetSpec, node: RecordedNode) -> WarmupSchedule | None:
    name = DEFAULT_WARMUP
    if node.pool is not None and node.pool in spec.ip_pools:
        name = spec.ip_pools[node.pool].warmup
    return spec.warmup.schedule(name)


def warmup_limit(spec: FleetSpec, node: RecordedNode, now: datetime) -> tuple[int, int | None]:
    """(warmup day, today's per-IP limit); the limit is None once warmup is complete or when
    the node has not started warming (it then counts at CPU capacity)."""
    if node.warmup_started_at is None:
        return 0, None
    schedule = schedule_for(spec, node)
    day = warmup_day(node.warmup_started_at, now)
    if schedule is None or warmup_complete(schedule, node.warmup_started_at, now):
        return day, None
    return day, daily_limit(schedule, day)


def recent_throughput(
    beats: Sequence[NodeMetrics],
    now: datetime,
    horizon: timedelta,
    ceiling: float | None = None,
) -> float | None:
    """Emails/day over the beats inside ``horizon`` (None when there are none): the median
    of the beats' rates (a robust statistic: one absurd beat among several moves nothing),
    never above ``ceiling`` (the plausible bound of the node's capacity), always finite."""
    inside = [
        b
        for b in beats
        if now - horizon <= b.at <= now + timedelta(seconds=5)
        and math.isfinite(b.interval_seconds)
        and b.interval_seconds >= 1.0
    ]
    if not inside:
        return None
    rates = sorted(b.sent * 86400.0 / b.interval_seconds for b in inside)
    middle = len(rates) // 2
    rate = rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2
    if ceiling is not None:
        rate = min(rate, ceiling)
    return rate if math.isfinite(rate) else None


def figures_horizon(spec: FleetSpec) -> timedelta:
    """How far back heartbeats count towards current throughput: the missed-beat span."""
    return spec.health.heartbeat_interval * spec.health.missed_beats


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """What one node's record and recent beats say now: its load for the autoscaler and the
    figures of its row in the fleet view (``node_figures``)."""

    load: NodeLoad
    report: HealthReport
    warmup_day: int
    daily_limit: int | None
    capacity_per_day: int
    queue_length: int | None
    bounce_rate: float | None
    complaint_rate: float | None


def node_figures(
    spec: FleetSpec,
    node: RecordedNode,
    beats: Sequence[NodeMetrics],
    now: datetime,
    unhealthy: bool,
) -> NodeFigures:
    """One node's figures (``beats``: its recent beats, oldest first or in any order)."""
    horizon = figures_horizon(spec)
    plan = spec.plans.get(node.plan)
    vcpu = plan.vcpu if plan is not None else 1
    day, limit = warmup_limit(spec, node, now)
    load = NodeLoad(
        name=node.name,
        region=node.region,
        pool=node.pool,
        vcpu=vcpu,
        daily_limit=limit,
        sent_per_day=recent_throughput(
            beats,
            now,
            horizon,
            PLAUSIBLE_CAPACITY_FACTOR * cpu_capacity_per_day(vcpu, spec.scaling.per_core_rate),
        ),
        counted=node.status in COUNTED,
        serving=node.status.in_rotation and not unhealthy,
        ips=spec.costs.ips_per_node,
    )
    inside = [b for b in beats if b.at >= now - horizon]
    latest = max(inside, key=lambda b: b.at) if inside else None
    sent = sum(b.sent for b in inside)
    return NodeFigures(
        load=load,
        report=grade_beats(inside, spec.health),
        warmup_day=day,
        daily_limit=limit,
        capacity_per_day=node_capacity_per_day(vcpu, spec.scaling.per_core_rate, limit, load.ips),
        queue_length=latest.queue_length if latest is not None else None,
        bounce_rate=sum(b.bounces for b in inside) / sent if sent > 0 else None,
        complaint_rate=sum(b.complaints for b in inside) / sent if sent > 0 else None,
    )


class FiguresCache:
    """``node_figures`` per node, kept between calls and computed again only when what it
    depends on changed: the spec, the node's record, its series of beats, which of them lie
    inside the horizon (or just after ``now``), its warmup day, or whether it is unhealthy. A
    daemon's sweeps and autoscaler then cost in proportion to what changed, not to the fleet
    (issue 14).

    Records and series are compared by identity: a series given here must be oldest first
    and never changed in place (a new tuple when it changes, as ``FleetState`` does)."""

    def __init__(self) -> None:
        #: name -> (record, series, key, figures, until when the key holds at the latest)
        self._entries: dict[
            str,
            tuple[
                RecordedNode,
                Sequence[NodeMetrics],
                tuple[int, int, int, bool],
                NodeFigures,
                datetime | None,
            ],
        ] = {}
        self._spec: FleetSpec | None = None

    def figures(
        self,
        spec: FleetSpec,
        node: RecordedNode,
        beats: Sequence[NodeMetrics],
        now: datetime,
        unhealthy: bool,
    ) -> NodeFigures:
        if spec is not self._spec:
            self._entries = {}
            self._spec = spec
        if beats:
            horizon = figures_horizon(spec)
            low = bisect.bisect_left(beats, now - horizon, key=_beat_at)
            high = bisect.bisect_right(beats, now + _FUTURE_SLACK, key=_beat_at)
        else:
            low = high = 0
        started = node.warmup_started_at
        day = warmup_day(started, now) if started is not None else 0
        key = (low, high, day, unhealthy)
        entry = self._entries.get(node.name)
        if entry is not None and entry[0] is node and entry[1] is beats and entry[2] == key:
            return entry[3]
        figures = node_figures(spec, node, beats, now, unhealthy)
        # the first moment ``key`` may change: a beat leaves the horizon, one just ahead of
        # ``now`` enters it, or the warmup day turns
        ends: list[datetime] = []
        if low < len(beats):
            ends.append(beats[low].at + figures_horizon(spec) + _TICK)
        if high < len(beats):
            ends.append(beats[high].at - _FUTURE_SLACK)
        if started is not None:
            ends.append(started + timedelta(days=day))
        self._entries[node.name] = (node, beats, key, figures, min(ends) if ends else None)
        return figures

    def until(self, name: str) -> datetime | None:
        """Until when the figures last computed for ``name`` hold whatever else stays
        (None: as long as its record and beats do)."""
        entry = self._entries.get(name)
        return entry[4] if entry is not None else None

    def forget_except(self, names: Collection[str]) -> None:
        """Drop the nodes not in ``names`` (closed ones)."""
        for name in list(self._entries):
            if name not in names:
                self._entries.pop(name, None)


_FUTURE_SLACK = timedelta(seconds=5)
_TICK = timedelta(microseconds=1)


def _beat_at(beat: NodeMetrics) -> datetime:
    return beat.at


def node_loads(
    spec: FleetSpec,
    nodes: Sequence[RecordedNode],
    recent: Mapping[str, Sequence[NodeMetrics]],
    now: datetime,
    unhealthy: frozenset[str] = frozenset(),
    cache: FiguresCache | None = None,
) -> list[NodeLoad]:
    figures = cache.figures if cache is not None else node_figures
    return [
        figures(spec, node, recent.get(node.name, ()), now, node.name in unhealthy).load
        for node in nodes
    ]


@dataclass(frozen=True, slots=True)
class NodeRow:
    name: str
    region: str
    pool: str | None
    status: str
    ip: str | None
    plan: str
    warmup_day: int
    daily_limit: int | None
    capacity_per_day: int
    throughput_per_day: float | None
    utilization: float | None
    last_heartbeat: datetime | None
    monthly_cost: Decimal
    grade: str
    grade_reasons: tuple[str, ...]
    missed_beats: int
    unhealthy: bool
    queue_length: int | None
    #: bounces / sent and complaints / sent over the recent beats (None: nothing sent)
    bounce_rate: float | None = None
    complaint_rate: float | None = None
    #: who took it out of rotation (reputation, health, operator, quarantine)
    paused_by: str | None = None
    #: the IP life cycle (warming, warmed, degraded, listed, quarantined; None: not assessed)
    ip_state: str | None = None
    #: an operator's hold (maintenance, cordon, drain) while it lasts: kind, state, by,
    #: reason, since, summary
    hold: Mapping[str, str] | None = None
    #: why the node is quarantined (a changed SSH host key), if it is
    quarantine: str | None = None


def hold_of(node: RecordedNode) -> dict[str, str] | None:
    """The JSON form of an operator's hold on ``node`` while it lasts (None otherwise)."""
    held = node.maintenance
    if held is None or not held.active:
        return None
    return {
        "kind": held.kind.value,
        "state": held.verb(node.status),
        "by": held.by,
        "reason": held.reason,
        "since": held.since.isoformat(),
        "summary": held.describe(node.status),
    }


@dataclass(frozen=True, slots=True)
class GroupRow:
    region: str
    pool: str
    nodes: int
    capacity_per_day: int
    throughput_per_day: float
    utilization: float | None
    monthly_cost: Decimal
    desired: int | None = None


@dataclass(frozen=True, slots=True)
class FleetView:
    fleet: str
    generated_at: datetime
    nodes: tuple[NodeRow, ...]
    groups: tuple[GroupRow, ...]
    monthly_cost: Decimal
    leader: bool | None = None
    decisions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "fleet": self.fleet,
            "generated_at": self.generated_at.isoformat(),
            "leader": self.leader,
            "monthly_cost": str(self.monthly_cost),
            "nodes": [
                {
                    "name": n.name,
                    "region": n.region,
                    "pool": n.pool,
                    "status": n.status,
                    "paused_by": n.paused_by,
                    "ip_state": n.ip_state,
                    "ip": n.ip,
                    "plan": n.plan,
                    "warmup_day": n.warmup_day,
                    "daily_limit": n.daily_limit,
                    "capacity_per_day": n.capacity_per_day,
                    "throughput_per_day": _round(n.throughput_per_day),
                    "utilization": _round(n.utilization, 4),
                    "last_heartbeat": n.last_heartbeat.isoformat() if n.last_heartbeat else None,
                    "monthly_cost": str(n.monthly_cost),
                    "health": n.grade,
                    "health_reasons": list(n.grade_reasons),
                    "missed_beats": n.missed_beats,
                    "unhealthy": n.unhealthy,
                    "queue_length": n.queue_length,
                    "bounce_rate": _round(n.bounce_rate, 4),
                    "complaint_rate": _round(n.complaint_rate, 5),
                    "hold": dict(n.hold) if n.hold else None,
                    "quarantine": n.quarantine,
                }
                for n in self.nodes
            ],
            "groups": [
                {
                    "region": g.region,
                    "pool": g.pool or None,
                    "nodes": g.nodes,
                    "capacity_per_day": g.capacity_per_day,
                    "throughput_per_day": _round(g.throughput_per_day),
                    "utilization": _round(g.utilization, 4),
                    "monthly_cost": str(g.monthly_cost),
                    "desired": g.desired,
                }
                for g in self.groups
            ],
            "decisions": list(self.decisions),
        }


#: what the fleet document says instead of costs to a reader without the cost token
COSTS_HIDDEN = "hidden: cost figures need the cost token (RECONCILER_COST_TOKEN)"


def money_or_hidden(value: object) -> str:
    """``$12.34``, or ``(hidden)`` when the document came without costs."""
    return "(hidden)" if value is None else f"${value}"


def without_costs(document: Mapping[str, Any]) -> dict[str, Any]:
    """The fleet document without any cost figure (for readers without the cost token)."""
    out = {k: v for k, v in document.items() if k != "monthly_cost"}
    for part in ("nodes", "groups"):
        rows = document.get(part)
        if isinstance(rows, list):
            out[part] = [
                {k: v for k, v in row.items() if k != "monthly_cost"}
                if isinstance(row, Mapping)
                else row
                for row in rows
            ]
    out["costs"] = COSTS_HIDDEN
    return out


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def build_view(
    spec: FleetSpec,
    recorded: RecordedFleet,
    recent: Mapping[str, Sequence[NodeMetrics]],
    now: datetime,
    *,
    assessment: HealthAssessment | None = None,
    decisions: Sequence[ScalingDecision] = (),
    leader: bool | None = None,
    ip_states: Mapping[str, str] | None = None,
    cache: FiguresCache | None = None,
) -> FleetView:
    nodes = [n for n in recorded.nodes if n.status is not NodeStatus.DECOMMISSIONED]
    health = assessment or assess(nodes, now, spec.health)
    liveness = {d.node: d for d in health.details}
    costs = CostResolver(spec, recorded.cost_overrides)
    rows: list[NodeRow] = []
    figures_of = cache.figures if cache is not None else node_figures
    loads: list[NodeLoad] = []
    for node in nodes:
        figures = figures_of(
            spec, node, recent.get(node.name, ()), now, node.name in health.unhealthy
        )
        load = figures.load
        loads.append(load)
        report = figures.report
        day, limit, capacity = figures.warmup_day, figures.daily_limit, figures.capacity_per_day
        cost = node.approximate_cost
        if cost is None:
            cost = cents(costs.node(node.plan, node.pool)[0])
        live = liveness.get(node.name)
        grade = report.grade
        reasons = report.reasons
        if live is not None and live.unhealthy:
            grade = Grade.CRITICAL
            reasons = (f"{live.missed} heartbeats missed", *reasons)
        rows.append(
            NodeRow(
                name=node.name,
                region=node.region,
                pool=node.pool,
                status=node.status.value,
                ip=node.ip_address,
                plan=node.plan,
                warmup_day=day,
                daily_limit=limit,
                capacity_per_day=capacity,
                throughput_per_day=load.sent_per_day,
                utilization=(
                    load.sent_per_day / capacity
                    if load.sent_per_day is not None and capacity > 0
                    else None
                ),
                last_heartbeat=node.last_heartbeat,
                monthly_cost=cost,
                grade=grade.label,
                grade_reasons=reasons,
                missed_beats=live.missed if live is not None else 0,
                unhealthy=node.name in health.unhealthy,
                queue_length=figures.queue_length,
                bounce_rate=figures.bounce_rate,
                complaint_rate=figures.complaint_rate,
                paused_by=node.paused_by.value if node.paused_by is not None else None,
                ip_state=(ip_states or {}).get(node.name),
                hold=hold_of(node),
                quarantine=node.quarantine,
            )
        )
    rows.sort(key=lambda r: (r.region, r.name))
    per_group = utilization_by(loads, spec.scaling.per_core_rate)
    desired = {d.region: d.desired for d in decisions}
    groups: list[GroupRow] = []
    for (region, pool), group_load in per_group.items():
        members = [r for r in rows if r.region == region and (r.pool or "") == pool]
        groups.append(_group(region, pool, members, group_load, desired.get(region)))
    total = sum((r.monthly_cost for r in rows), Decimal(0))
    return FleetView(
        fleet=spec.name,
        generated_at=now,
        nodes=tuple(rows),
        groups=tuple(groups),
        monthly_cost=total,
        leader=leader,
        decisions=tuple(d.reason for d in decisions),
    )


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """The fleet view's aggregates (the daemon's gauges), without its rows."""

    #: (region, status) -> nodes
    statuses: dict[tuple[str, str], int]
    #: (region, grade) -> nodes
    grades: dict[tuple[str, str], int]
    #: region -> unhealthy nodes
    unhealthy: dict[str, int]
    #: (region, pool or '') -> utilization, as the view's groups
    groups: dict[tuple[str, str], Utilization]
    monthly_cost: Decimal
    #: with a cache: the first moment a node's figures may change by time alone (a beat
    #: leaving the horizon, a warmup day turning); None: not before its inputs change
    until: datetime | None = field(default=None, compare=False)


def summarise(
    spec: FleetSpec,
    recorded: RecordedFleet,
    recent: Mapping[str, Sequence[NodeMetrics]],
    now: datetime,
    assessment: HealthAssessment,
    cache: FiguresCache | None = None,
) -> FleetSummary:
    """What ``build_view`` would total, without building a row per node (with ``cache``,
    only the nodes whose figures changed are computed again)."""
    figures_of = cache.figures if cache is not None else node_figures
    costs = CostResolver(spec, recorded.cost_overrides)
    down = {live.node for live in assessment.details if live.unhealthy}
    paused = assessment.unhealthy
    statuses: dict[tuple[str, str], int] = {}
    grades: dict[tuple[str, str], int] = {}
    unhealthy: dict[str, int] = {}
    loads: list[NodeLoad] = []
    total = Decimal(0)
    until: datetime | None = None
    for node in recorded.nodes:
        if node.status is NodeStatus.DECOMMISSIONED:
            continue
        name, region = node.name, node.region
        figures = figures_of(spec, node, recent.get(name, ()), now, name in paused)
        loads.append(figures.load)
        grade = Grade.CRITICAL if name in down else figures.report.grade
        key = (region, node.status.value)
        statuses[key] = statuses.get(key, 0) + 1
        graded = (region, grade.label)
        grades[graded] = grades.get(graded, 0) + 1
        unhealthy[region] = unhealthy.get(region, 0) + (1 if name in paused else 0)
        cost = node.approximate_cost
        total += cost if cost is not None else cents(costs.node(node.plan, node.pool)[0])
        if cache is not None:
            ends = cache.until(name)
            if ends is not None and (until is None or ends < until):
                until = ends
    return FleetSummary(
        statuses=statuses,
        grades=grades,
        unhealthy=unhealthy,
        groups=utilization_by(loads, spec.scaling.per_core_rate),
        monthly_cost=total,
        until=until,
    )


def _group(
    region: str, pool: str, members: Sequence[NodeRow], load: Utilization, desired: int | None
) -> GroupRow:
    return GroupRow(
        region=region,
        pool=pool,
        nodes=len(members),
        capacity_per_day=load.capacity + load.missing_capacity,
        throughput_per_day=load.throughput,
        utilization=load.ratio,
        monthly_cost=sum((m.monthly_cost for m in members), Decimal(0)),
        desired=desired,
    )


# --- text rendering ----------------------------------------------------------------------


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    seconds = int((now - at).total_seconds())
    if seconds < 0:
        return "now"
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def status_text(node: Mapping[str, Any]) -> str:
    """A node's status, with who took it out of rotation (``paused (reputation)``)."""
    status = str(node["status"])
    by = node.get("paused_by")
    return f"{status} ({by})" if by and status != "maintenance" else status


def render_text(view: Mapping[str, Any]) -> str:
    """Plain-text table from the JSON document (so it works for local and remote views)."""
    now = datetime.fromisoformat(str(view["generated_at"]))
    header = (
        "NODE",
        "REGION",
        "POOL",
        "STATUS",
        "IP",
        "IP STATE",
        "PLAN",
        "WARMUP",
        "LIMIT/DAY",
        "UTIL",
        "LAST BEAT",
        "COST/MO",
        "HEALTH",
    )
    lines: list[tuple[str, ...]] = [header]
    for n in view["nodes"]:
        last = n["last_heartbeat"]
        lines.append(
            (
                n["name"],
                n["region"],
                n["pool"] or "-",
                status_text(n),
                n["ip"] or "-",
                n.get("ip_state") or "-",
                n["plan"],
                f"day {n['warmup_day']}" if n["warmup_day"] else "-",
                str(n["daily_limit"]) if n["daily_limit"] is not None else "-",
                _pct(n["utilization"]),
                _ago(datetime.fromisoformat(last) if last else None, now),
                money_or_hidden(n.get("monthly_cost")),
                n["health"],
            )
        )
    out = [_table(lines)] if view["nodes"] else ["no nodes recorded"]
    if view["groups"]:
        group_lines: list[tuple[str, ...]] = [
            (
                "REGION",
                "POOL",
                "NODES",
                "DESIRED",
                "CAPACITY/DAY",
                "THROUGHPUT/DAY",
                "UTIL",
                "COST/MO",
            )
        ]
        for g in view["groups"]:
            group_lines.append(
                (
                    g["region"],
                    g["pool"] or "-",
                    str(g["nodes"]),
                    str(g["desired"]) if g["desired"] is not None else "-",
                    f"{g['capacity_per_day']:,}",
                    f"{g['throughput_per_day']:,.0f}",
                    _pct(g["utilization"]),
                    money_or_hidden(g.get("monthly_cost")),
                )
            )
        out.append("")
        out.append(_table(group_lines))
    held = held_lines(view)
    if held:
        out.append("")
        out.append("held by an operator:")
        out.extend(f"  {line}" for line in held)
    leader = view.get("leader")
    lead = "" if leader is None else (", this daemon leads" if leader else ", standby daemon")
    out.append("")
    out.append(
        f"fleet {view['fleet']}: {len(view['nodes'])} nodes, monthly cost "
        f"{money_or_hidden(view.get('monthly_cost'))}{lead}"
    )
    spec = view.get("spec") or {}
    if spec.get("applied_revision"):
        line = f"spec: {spec.get('kind')} revision {str(spec['applied_revision'])[:19]} applied"
        if spec.get("attempted_error") and spec.get("attempted_revision") != spec.get(
            "applied_revision"
        ):
            line += f"; {str(spec['attempted_revision'])[:19]} refused"
        out.append(line)
    for decision in view.get("decisions") or []:
        out.append(f"autoscaler: {decision}")
    return "\n".join(out)


def held_lines(view: Mapping[str, Any]) -> list[str]:
    """One line per node an operator holds out (cordon, drain, maintenance) or that is
    quarantined, with who, why, since when and the command that ends it."""
    lines: list[str] = []
    for n in view["nodes"]:
        hold = n.get("hold")
        if hold:
            ends = "resume" if hold["kind"] == "maintenance" else "uncordon"
            lines.append(f"{n['name']}: {hold['summary']} (`reconcile node {ends} {n['name']}`)")
        if n.get("quarantine"):
            lines.append(
                f"{n['name']}: quarantined: {n['quarantine']} "
                f"(`reconcile node release {n['name']}`)"
            )
    return lines


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )
