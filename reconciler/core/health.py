"""Node health: grades from heartbeat figures and liveness from missed beats. Pure.

Grades follow the seeds' table (defaults in ``HealthPolicy``): queue under 100 healthy,
100-500 warning, over 500 critical; processing rate 100+/min healthy, 50-100 warning, under 50
critical (graded only while mail is waiting: an idle node is not slow); bounces under 1 %
healthy, 1-3 % warning, over 3 % critical (graded once a beat window has sent mail).

Liveness is stateless: a node that has beaten at least once and whose last beat is
``missed_beats x heartbeat_interval`` old is unhealthy since ``last + missed x interval``;
it is due for replacement ``replace_after`` later. A node that never sent a beat is reported
as "no heartbeat yet" and is never replaced for it (its agent may not be installed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedNode
from specs.model import HealthPolicy, ReputationPolicy, UnhealthyAction


class Grade(IntEnum):
    """Ordered: max() of grades is the worst."""

    UNKNOWN = 0
    HEALTHY = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class HealthReport:
    grade: Grade
    reasons: tuple[str, ...]
    queue: Grade = Grade.UNKNOWN
    rate: Grade = Grade.UNKNOWN
    bounces: Grade = Grade.UNKNOWN
    rate_per_minute: float | None = None
    bounce_rate: float | None = None


def grade_queue(queue_length: int, policy: HealthPolicy) -> Grade:
    if queue_length > policy.queue_critical:
        return Grade.CRITICAL
    if queue_length >= policy.queue_warning:
        return Grade.WARNING
    return Grade.HEALTHY


def grade_rate(per_minute: float, policy: HealthPolicy) -> Grade:
    if per_minute < policy.rate_critical:
        return Grade.CRITICAL
    if per_minute < policy.rate_warning:
        return Grade.WARNING
    return Grade.HEALTHY


def grade_bounces(rate: float, policy: HealthPolicy) -> Grade:
    if rate > policy.bounce_critical:
        return Grade.CRITICAL
    if rate >= policy.bounce_warning:
        return Grade.WARNING
    return Grade.HEALTHY


def processing_rate(beat: NodeMetrics) -> float:
    """Emails per minute over the beat's interval."""
    if beat.interval_seconds <= 0:
        return 0.0
    return beat.sent * 60.0 / beat.interval_seconds


def grade_beats(beats: Sequence[NodeMetrics], policy: HealthPolicy) -> HealthReport:
    """Grade from the latest beat (queue, rate) and the recent beats (bounce rate)."""
    if not beats:
        return HealthReport(Grade.UNKNOWN, ("no heartbeat figures",))
    latest = max(beats, key=lambda b: b.at)
    reasons: list[str] = []
    queue = grade_queue(latest.queue_length, policy)
    if queue is not Grade.HEALTHY:
        reasons.append(f"queue {latest.queue_length} ({queue.label})")
    rate_value: float | None = None
    rate = Grade.UNKNOWN
    if latest.queue_length > 0:
        rate_value = processing_rate(latest)
        rate = grade_rate(rate_value, policy)
        if rate is not Grade.HEALTHY:
            reasons.append(f"processing {rate_value:.0f}/min with mail waiting ({rate.label})")
    sent = sum(b.sent for b in beats)
    bounced = sum(b.bounces for b in beats)
    bounce_value: float | None = None
    bounces = Grade.UNKNOWN
    if sent > 0:
        bounce_value = bounced / sent
        bounces = grade_bounces(bounce_value, policy)
        if bounces is not Grade.HEALTHY:
            reasons.append(f"bounce rate {bounce_value:.1%} ({bounces.label})")
    overall = max(queue, rate, bounces)
    return HealthReport(
        grade=overall,
        reasons=tuple(reasons),
        queue=queue,
        rate=rate,
        bounces=bounces,
        rate_per_minute=rate_value,
        bounce_rate=bounce_value,
    )


# --- liveness ----------------------------------------------------------------------------

#: statuses whose nodes are expected to send heartbeats
WATCHED = frozenset({NodeStatus.WARMING, NodeStatus.ACTIVE, NodeStatus.UNHEALTHY})


@dataclass(frozen=True, slots=True)
class Liveness:
    node: str
    missed: int
    unhealthy: bool
    unhealthy_since: datetime | None
    replace_due: bool
    never_beaten: bool
    reason: str


def missed_beats(last: datetime, now: datetime, interval: timedelta) -> int:
    if interval.total_seconds() <= 0 or now <= last:
        return 0
    return int((now - last) / interval)


def liveness(node: RecordedNode, now: datetime, policy: HealthPolicy) -> Liveness:
    """Missed beats of one node; see the module docstring for the rules."""
    if node.last_heartbeat is None:
        return Liveness(node.name, 0, False, None, False, True, f"{node.name}: no heartbeat yet")
    missed = missed_beats(node.last_heartbeat, now, policy.heartbeat_interval)
    if missed < policy.missed_beats:
        return Liveness(node.name, missed, False, None, False, False, f"{node.name}: alive")
    since = node.last_heartbeat + policy.heartbeat_interval * policy.missed_beats
    due = policy.on_unhealthy is UnhealthyAction.REPLACE and now - since >= policy.replace_after
    reason = (
        f"{node.name}: unhealthy, {missed} heartbeats missed "
        f"(last {node.last_heartbeat.isoformat(timespec='seconds')})"
    )
    if due:
        reason += ", due for replacement"
    return Liveness(node.name, missed, True, since, due, False, reason)


@dataclass(frozen=True, slots=True)
class HealthAssessment:
    """Feeds PlanOptions.unhealthy / replace_unhealthy."""

    unhealthy: frozenset[str]
    replace: frozenset[str]
    silent: frozenset[str]  # watched nodes that never sent a beat
    details: tuple[Liveness, ...]


def assess(nodes: Sequence[RecordedNode], now: datetime, policy: HealthPolicy) -> HealthAssessment:
    unhealthy: set[str] = set()
    replace: set[str] = set()
    silent: set[str] = set()
    details: list[Liveness] = []
    for node in sorted(nodes, key=lambda n: n.name):
        if node.status not in WATCHED:
            continue
        live = liveness(node, now, policy)
        details.append(live)
        if live.never_beaten:
            silent.add(node.name)
        if live.unhealthy and policy.on_unhealthy is not UnhealthyAction.ALERT:
            unhealthy.add(node.name)
        if live.replace_due:
            replace.add(node.name)
    return HealthAssessment(
        frozenset(unhealthy), frozenset(replace), frozenset(silent), tuple(details)
    )


# --- alerts ------------------------------------------------------------------------------


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class AlertCondition:
    """A condition that holds now. ``key`` identifies it while it lasts (de-duplication)."""

    key: str
    severity: Severity
    node: str | None
    message: str


def alert_conditions(
    nodes: Sequence[RecordedNode],
    assessment: HealthAssessment,
    recent: Mapping[str, Sequence[NodeMetrics]],
    health: HealthPolicy,
    reputation: ReputationPolicy,
) -> tuple[AlertCondition, ...]:
    """Seed 002's severities: high = node down/unhealthy (or blocklisted), medium = bounce rate
    over reputation.bounce_alert, low = CPU over health.cpu_alert."""
    result: list[AlertCondition] = []
    for live in assessment.details:
        if live.unhealthy:
            result.append(
                AlertCondition(f"down:{live.node}", Severity.HIGH, live.node, live.reason)
            )
    for node in sorted(nodes, key=lambda n: n.name):
        beats = recent.get(node.name) or []
        if not beats:
            continue
        sent = sum(b.sent for b in beats)
        bounced = sum(b.bounces for b in beats)
        if sent > 0 and bounced / sent > reputation.bounce_alert:
            result.append(
                AlertCondition(
                    f"bounce:{node.name}",
                    Severity.MEDIUM,
                    node.name,
                    f"{node.name}: bounce rate {bounced / sent:.1%} over "
                    f"{reputation.bounce_alert:.1%}",
                )
            )
        latest = max(beats, key=lambda b: b.at)
        if latest.cpu > health.cpu_alert:
            result.append(
                AlertCondition(
                    f"cpu:{node.name}",
                    Severity.LOW,
                    node.name,
                    f"{node.name}: CPU {latest.cpu:.0%} over {health.cpu_alert:.0%}",
                )
            )
    return tuple(result)


# --- decisions only from trustworthy observations (issue 10) -----------------------------


@dataclass(frozen=True, slots=True)
class Disruption:
    """Many nodes silent at once: the observer's or the network's problem, not the nodes'."""

    scope: str  # a region's name, or "fleet"
    silent: int
    watched: int

    @property
    def message(self) -> str:
        where = "the fleet" if self.scope == "fleet" else f"region {self.scope}"
        return (
            f"{self.silent} of {self.watched} nodes of {where} went silent at once: treated as "
            "an observer or network problem; no replacement, pauses throttled"
        )


@dataclass(frozen=True, slots=True)
class GuardedHealth:
    """The assessment health decisions may act on, and why some were held back."""

    assessment: HealthAssessment
    #: health decisions wait until then (a full detection window since observing resumed)
    blind_until: datetime | None
    disruptions: tuple[Disruption, ...]
    #: nodes the raw assessment would pause or replace that were held back
    held: frozenset[str]


def detection_window(policy: HealthPolicy) -> timedelta:
    return policy.heartbeat_interval * policy.missed_beats


def guard_assessment(
    raw: HealthAssessment,
    nodes: Sequence[RecordedNode],
    now: datetime,
    policy: HealthPolicy,
    *,
    observing_since: datetime,
    paused: frozenset[str] = frozenset(),
    pause_step: int = 1,
) -> GuardedHealth:
    """Hold back health decisions the observations cannot justify.

    - **Observation gap**: until a full detection window (``missed_beats x interval``) has
      passed since ``observing_since`` (the daemon's start, or the end of a store outage or of
      an intake stop), no node is newly paused and none is replaced; pauses already in force
      (``paused``) stay. A replacement's ``replace_after`` counts from the later of the node's
      unhealthy time and the end of that window.
    - **Zone disruption**: when at least ``policy.disruption_share`` (and
      ``policy.disruption_min_silent``) of a region's nodes that ever beat are silent at once
      (or of the whole fleet: then every region), nothing there is replaced, and at most
      ``pause_step`` more nodes are paused per evaluation (throttled), beside those already
      paused.
    """
    window = detection_window(policy)
    blind_until = observing_since + window
    details = {live.node: live for live in raw.details}
    if now < blind_until:
        kept = raw.unhealthy & paused
        waiting = (raw.unhealthy - kept) | raw.replace
        blind = HealthAssessment(kept, frozenset(), raw.silent, raw.details)
        return GuardedHealth(blind, blind_until, (), frozenset(waiting))
    replace = {
        name
        for name in raw.replace
        if (since := details[name].unhealthy_since) is not None
        and now - max(since, blind_until) >= policy.replace_after
    }
    region_of = {node.name: node.region for node in nodes}
    watched: dict[str, int] = {}
    silent: dict[str, int] = {}
    for live in raw.details:
        if live.never_beaten:
            continue
        region = region_of.get(live.node, "")
        watched[region] = watched.get(region, 0) + 1
        if live.unhealthy:
            silent[region] = silent.get(region, 0) + 1
    disruptions: list[Disruption] = []
    total_watched, total_silent = sum(watched.values()), sum(silent.values())

    def _disrupted(silent: int, watched: int) -> bool:
        return (
            silent >= policy.disruption_min_silent
            and watched > 0
            and silent / watched >= policy.disruption_share
        )

    if _disrupted(total_silent, total_watched):
        disruptions.append(Disruption("fleet", total_silent, total_watched))
        disrupted = set(watched)
    else:
        disrupted = set()
        for region in sorted(watched):
            if _disrupted(silent.get(region, 0), watched[region]):
                disruptions.append(Disruption(region, silent.get(region, 0), watched[region]))
                disrupted.add(region)
    unhealthy = set(raw.unhealthy)
    held: set[str] = set(raw.replace - replace)
    if disrupted:
        in_zone = {name for name in raw.unhealthy | raw.replace if region_of.get(name) in disrupted}
        held |= replace & in_zone
        replace -= in_zone
        newly = sorted(
            (name for name in raw.unhealthy & in_zone if name not in paused),
            key=lambda name: (details[name].unhealthy_since or now, name),
        )
        for name in newly[pause_step:]:
            unhealthy.discard(name)
            held.add(name)
    guarded = HealthAssessment(frozenset(unhealthy), frozenset(replace), raw.silent, raw.details)
    return GuardedHealth(guarded, None, tuple(disruptions), frozenset(held))
