"""Sender reputation, pure: DNSBL verdicts, rate windows, listings with hysteresis, warmup
safety, the IP life cycle and the sending rotation. No I/O, no clock (callers pass ``now``).

Reading a DNSBL answer (RFC 5782 and each list's documented codes, see ``specs.blocklists``):

- NXDOMAIN (or no A record) is **not listed**;
- an A record matching the zone's **error** codes (Spamhaus ``127.255.255.252/.254/.255``, DQS
  also ``.250/.251``) is an **error**: the verdict is *unknown*, never *listed*;
- an A record matching a **listing** rule is *listed* with that rule's name, severity and
  action (first match wins; with several codes the most severe one counts);
- any other 127.0.0.0/8 answer is *listed* with the zone's ``unmapped`` severity; an answer
  outside 127.0.0.0/8 is an error (RFC 5782 answers are loopback addresses; a parked or dead
  domain answers its own address for everything);
- a timeout, SERVFAIL, REFUSED, an open circuit breaker, an exhausted daily budget or an
  unusable zone are *unknown*.

A zone is trusted only after its RFC 5782 test entries answer right: ``127.0.0.2`` listed and
``127.0.0.1`` not listed. A zone that lists 127.0.0.1 lists everything (shut down or
wildcarded); one that does not list 127.0.0.2 is dead or not a DNSBL; one that answers error
codes is refusing us. Such a zone is *unusable* (its verdicts are unknown, with an alert).

Rates (bounces, complaints) are judged over ``reputation.window``, stretched up to
``max_window`` until it holds ``min_volume`` messages; below that there is no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum

from reconciler.core.fleet import NodeStatus
from reconciler.core.health import AlertCondition
from reconciler.core.health import Severity as AlertSeverity
from reconciler.core.warmup import daily_limit, warmup_day
from specs.blocklists import CodePattern, ListingAction, Severity, parse_code_pattern
from specs.model import BlocklistSpec, ReputationPolicy, WarmupSchedule

#: RFC 5782 test entries: every DNSBL must list 127.0.0.2 and must not list 127.0.0.1
TEST_LISTED = "127.0.0.2"
TEST_NOT_LISTED = "127.0.0.1"

_ALERT_SEVERITY = {
    Severity.HIGH: AlertSeverity.HIGH,
    Severity.MEDIUM: AlertSeverity.MEDIUM,
    Severity.LOW: AlertSeverity.LOW,
}


def alert_severity(severity: Severity) -> AlertSeverity:
    return _ALERT_SEVERITY[severity]


# --- answers and verdicts ----------------------------------------------------------------


class AnswerKind(StrEnum):
    """What one DNS query for ``<reversed ip>.<zone>`` came back with."""

    ADDRESSES = "addresses"  # one or more A records
    NXDOMAIN = "nxdomain"  # the name does not exist: not listed
    NODATA = "nodata"  # the name exists without an A record: not listed
    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    FAILED = "failed"  # any other failure (network error, malformed answer)
    CIRCUIT_OPEN = "circuit_open"  # not asked: the zone's circuit breaker is open
    BUDGET = "budget"  # not asked: the zone's daily query budget is spent
    UNUSABLE = "unusable"  # not asked: the zone failed its RFC 5782 probe


@dataclass(frozen=True, slots=True)
class ZoneAnswer:
    zone: str
    ip: str
    kind: AnswerKind
    addresses: tuple[str, ...] = ()
    ttl: int = 0
    #: why (failures); never holds the query name (a DQS key may be in it)
    detail: str = ""
    cached: bool = False


class Verdict(StrEnum):
    LISTED = "listed"
    NOT_LISTED = "not_listed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ZoneVerdict:
    zone: str
    ip: str
    verdict: Verdict
    codes: tuple[str, ...] = ()
    listing: str | None = None  # the rule's name (SBL, XBL, PBL...)
    severity: Severity | None = None
    action: ListingAction | None = None
    reason: str = ""

    @property
    def listed(self) -> bool:
        return self.verdict is Verdict.LISTED


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: CodePattern
    name: str
    severity: Severity
    action: ListingAction


@dataclass(frozen=True, slots=True)
class ZoneRules:
    """A zone's answer-code map, compiled from the spec (``BlocklistSpec``)."""

    zone: str
    listings: tuple[_Rule, ...]
    errors: tuple[CodePattern, ...]
    unmapped_severity: Severity
    unmapped_action: ListingAction
    daily_budget: int | None

    @classmethod
    def from_spec(cls, spec: BlocklistSpec, policy: ReputationPolicy) -> ZoneRules:
        rules = tuple(
            _Rule(
                parse_code_pattern(rule.codes),
                rule.name or rule.codes,
                rule.severity,
                rule.action if rule.action is not None else policy.action_for(rule.severity),
            )
            for rule in spec.listing_rules()
        )
        return cls(
            zone=spec.zone,
            listings=rules,
            errors=tuple(parse_code_pattern(e) for e in spec.error_codes()),
            unmapped_severity=spec.unmapped,
            unmapped_action=policy.action_for(spec.unmapped),
            daily_budget=spec.budget(),
        )

    def error_for(self, code: str) -> CodePattern | None:
        for pattern in self.errors:
            if pattern.matches(code):
                return pattern
        return None

    def rule_for(self, code: str) -> _Rule | None:
        for rule in self.listings:
            if rule.pattern.matches(code):
                return rule
        return None


def compile_rules(policy: ReputationPolicy) -> dict[str, ZoneRules]:
    return {b.zone: ZoneRules.from_spec(b, policy) for b in policy.blocklists}


#: what Spamhaus' (and others') error codes mean, for people
ERROR_MEANINGS: dict[str, str] = {
    "127.255.255.250": "DQS key disabled",
    "127.255.255.251": "DQS key rejected or over its limit",
    "127.255.255.252": "typo in the DNSBL zone name",
    "127.255.255.254": "query through a public or open resolver (refused by the list)",
    "127.255.255.255": "too many queries (over the list's free limit)",
}


def _is_loopback_v4(code: str) -> bool:
    parts = code.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


def read_answer(rules: ZoneRules, answer: ZoneAnswer) -> ZoneVerdict:
    """One zone's answer for one IP -> listed / not listed / unknown (module docstring)."""
    zone, ip = answer.zone, answer.ip
    if answer.kind in (AnswerKind.NXDOMAIN, AnswerKind.NODATA):
        return ZoneVerdict(zone, ip, Verdict.NOT_LISTED)
    if answer.kind is not AnswerKind.ADDRESSES or not answer.addresses:
        why = answer.detail or answer.kind.value
        return ZoneVerdict(zone, ip, Verdict.UNKNOWN, reason=f"{answer.kind.value}: {why}")
    codes = tuple(sorted(set(answer.addresses)))
    for code in codes:
        if rules.error_for(code) is not None:
            meaning = ERROR_MEANINGS.get(code, "an error code of the list")
            return ZoneVerdict(
                zone, ip, Verdict.UNKNOWN, codes, reason=f"error answer {code}: {meaning}"
            )
        if not _is_loopback_v4(code):
            return ZoneVerdict(
                zone,
                ip,
                Verdict.UNKNOWN,
                codes,
                reason=f"answer {code} is not a DNSBL code (127.0.0.0/8): the zone may be "
                "dead or parked",
            )
    best: tuple[int, int, str, Severity, ListingAction] | None = None
    for code in codes:
        rule = rules.rule_for(code)
        if rule is not None:
            candidate = (
                rule.severity.rank,
                rule.action.rank,
                rule.name,
                rule.severity,
                rule.action,
            )
        else:
            candidate = (
                rules.unmapped_severity.rank,
                rules.unmapped_action.rank,
                f"unmapped code {code}",
                rules.unmapped_severity,
                rules.unmapped_action,
            )
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    assert best is not None
    _, _, name, severity, action = best
    return ZoneVerdict(zone, ip, Verdict.LISTED, codes, name, severity, action)


# --- zone probes (RFC 5782 test entries) -------------------------------------------------


class ZoneHealth(StrEnum):
    USABLE = "usable"
    DEAD = "dead"  # does not list its test entry 127.0.0.2
    LISTS_EVERYTHING = "lists_everything"  # lists 127.0.0.1
    ERRORS = "errors"  # answers its test entries with error codes
    UNREACHABLE = "unreachable"  # timeouts, SERVFAIL, REFUSED


@dataclass(frozen=True, slots=True)
class ZoneProbe:
    zone: str
    health: ZoneHealth
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.health is ZoneHealth.USABLE


def judge_probe(rules: ZoneRules, listed: ZoneAnswer, not_listed: ZoneAnswer) -> ZoneProbe:
    """``listed``: the answer for 127.0.0.2; ``not_listed``: for 127.0.0.1."""
    zone = rules.zone
    positive = read_answer(rules, listed)
    negative = read_answer(rules, not_listed)
    for verdict in (positive, negative):
        if verdict.verdict is Verdict.UNKNOWN and verdict.codes:
            return ZoneProbe(
                zone, ZoneHealth.ERRORS, f"answers its test entries with {verdict.reason}"
            )
    if negative.verdict is Verdict.LISTED:
        return ZoneProbe(
            zone,
            ZoneHealth.LISTS_EVERYTHING,
            f"lists its RFC 5782 test entry 127.0.0.1 ({', '.join(negative.codes)}): it lists "
            "everything (shut down or wildcarded); its answers are not trusted",
        )
    if positive.verdict is Verdict.NOT_LISTED:
        return ZoneProbe(
            zone,
            ZoneHealth.DEAD,
            "does not list its RFC 5782 test entry 127.0.0.2: the zone is dead, misspelt or not "
            "a DNSBL",
        )
    for verdict in (positive, negative):
        if verdict.verdict is Verdict.UNKNOWN:
            return ZoneProbe(zone, ZoneHealth.UNREACHABLE, verdict.reason)
    return ZoneProbe(zone, ZoneHealth.USABLE)


# --- an IP across zones ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IpVerdict:
    ip: str
    verdict: Verdict
    zones: tuple[ZoneVerdict, ...]

    @property
    def listings(self) -> tuple[ZoneVerdict, ...]:
        return tuple(z for z in self.zones if z.listed)

    @property
    def unknown(self) -> tuple[ZoneVerdict, ...]:
        return tuple(z for z in self.zones if z.verdict is Verdict.UNKNOWN)


def combine(ip: str, verdicts: Iterable[ZoneVerdict]) -> IpVerdict:
    """Listed on any zone -> listed; else unknown on any -> unknown; else not listed."""
    zones = tuple(sorted(verdicts, key=lambda v: v.zone))
    if any(v.listed for v in zones):
        overall = Verdict.LISTED
    elif any(v.verdict is Verdict.UNKNOWN for v in zones) or not zones:
        overall = Verdict.UNKNOWN
    else:
        overall = Verdict.NOT_LISTED
    return IpVerdict(ip, overall, zones)


# --- listings over time: hysteresis ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListingState:
    """An open listing of one IP on one zone (a row of ip_blocklist_events)."""

    ip: str
    zone: str
    listed_at: datetime
    codes: tuple[str, ...]
    listing: str
    severity: Severity
    action: ListingAction
    clean_checks: int = 0
    first_clean_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ListingEvent:
    kind: str  # "listed", "delisted", "changed" (codes or clean count)
    state: ListingState
    at: datetime


def step_listing(
    state: ListingState | None, verdict: ZoneVerdict, now: datetime, delist_after: int
) -> tuple[ListingState | None, ListingEvent | None]:
    """One check of (ip, zone). A listing opens at once; it closes after ``delist_after``
    consecutive clean checks (its ``delisted_at`` is the first of them). An unknown verdict
    neither counts as clean nor resets the count."""
    if verdict.verdict is Verdict.UNKNOWN:
        return state, None
    if verdict.listed:
        assert verdict.severity is not None
        assert verdict.action is not None
        if state is None:
            opened = ListingState(
                verdict.ip,
                verdict.zone,
                now,
                verdict.codes,
                verdict.listing or "listed",
                verdict.severity,
                verdict.action,
            )
            return opened, ListingEvent("listed", opened, now)
        updated = replace(
            state,
            codes=verdict.codes,
            listing=verdict.listing or state.listing,
            severity=verdict.severity,
            action=verdict.action,
            clean_checks=0,
            first_clean_at=None,
        )
        return updated, (ListingEvent("changed", updated, now) if updated != state else None)
    if state is None:
        return None, None
    clean = state.clean_checks + 1
    first = state.first_clean_at or now
    if clean >= delist_after:
        closed = replace(state, clean_checks=clean, first_clean_at=first)
        return None, ListingEvent("delisted", closed, first)
    updated = replace(state, clean_checks=clean, first_clean_at=first)
    return updated, ListingEvent("changed", updated, now)


# --- sending counts and rates ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendCounts:
    """Messages with a final outcome (delivered or hard-bounced), soft bounces (deferrals)
    and complaints."""

    sent: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0

    def __add__(self, other: SendCounts) -> SendCounts:
        return SendCounts(
            self.sent + other.sent,
            self.hard_bounces + other.hard_bounces,
            self.soft_bounces + other.soft_bounces,
            self.complaints + other.complaints,
        )

    @property
    def attempts(self) -> int:
        """Messages with a final outcome: delivered + hard-bounced (the rates' denominator)."""
        return self.sent + self.hard_bounces


@dataclass(frozen=True, slots=True)
class CountBucket:
    """A node's counts in one hour (``start`` is the hour)."""

    start: datetime
    counts: SendCounts


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class WindowCounts:
    counts: SendCounts
    span: timedelta  # how far back the window went
    judged: bool  # at least min_volume messages


def window_counts(
    buckets: Sequence[CountBucket],
    now: datetime,
    policy: ReputationPolicy,
    since: datetime | None = None,
) -> WindowCounts:
    """Sum of the buckets in ``policy.window``, stretched hour by hour up to ``max_window``
    until they hold ``min_volume`` messages. Buckets before ``since`` (an operator's resume)
    never count."""
    ordered = sorted(
        # an hour that began before ``since`` holds messages sent before it: left out whole
        (b for b in buckets if b.start <= now and (since is None or b.start >= since)),
        key=lambda b: b.start,
        reverse=True,
    )
    base = now - policy.window
    total = SendCounts()
    span = policy.window
    for bucket in ordered:
        if bucket.start < base:
            break
        total = total + bucket.counts
    if total.attempts < policy.min_volume:
        limit = now - policy.max_window
        total = SendCounts()
        span = policy.window
        for bucket in ordered:
            if bucket.start < limit:
                break
            total = total + bucket.counts
            span = max(span, now - bucket.start)
            if bucket.start < base and total.attempts >= policy.min_volume:
                break
    return WindowCounts(total, span, total.attempts >= policy.min_volume)


class RateLevel(IntEnum):
    OK = 0
    ALERT = 1
    PAUSE = 2


@dataclass(frozen=True, slots=True)
class RateVerdict:
    counts: SendCounts
    span: timedelta
    judged: bool
    bounce_rate: float | None
    complaint_rate: float | None
    bounce: RateLevel = RateLevel.OK
    complaint: RateLevel = RateLevel.OK


def _level(rate: float | None, alert: float, pause: float) -> RateLevel:
    if rate is None:
        return RateLevel.OK
    if rate > pause:
        return RateLevel.PAUSE
    if rate > alert:
        return RateLevel.ALERT
    return RateLevel.OK


def judge_rates(window: WindowCounts, policy: ReputationPolicy) -> RateVerdict:
    """Hard-bounce and complaint rates over the window; no verdict below ``min_volume``."""
    counts = window.counts
    if not window.judged or counts.attempts <= 0:
        return RateVerdict(counts, window.span, False, None, None)
    bounce = counts.hard_bounces / counts.attempts
    complaint = counts.complaints / counts.attempts
    return RateVerdict(
        counts,
        window.span,
        True,
        bounce,
        complaint,
        _level(bounce, policy.bounce_alert, policy.bounce_pause),
        _level(complaint, policy.complaint_alert, policy.complaint_pause),
    )


# --- the check interval and the query budget ---------------------------------------------

#: share of a zone's daily budget the scheduled checks may use (the rest: probes, CLI, retries)
BUDGET_SHARE = 0.9
#: queries one check run spends on a zone's RFC 5782 probe
PROBE_QUERIES = 2


@dataclass(frozen=True, slots=True)
class IntervalDecision:
    interval: timedelta
    stretched_by: str | None  # the zone that needed it
    reason: str


def check_interval(
    policy: ReputationPolicy, ips: int, rules: Mapping[str, ZoneRules]
) -> IntervalDecision:
    """The spec's interval, stretched so that ``ips`` look-ups per zone per check stay under
    ``BUDGET_SHARE`` of every zone's daily budget."""
    interval = policy.check_interval
    stretched: str | None = None
    reason = f"every {_fmt(interval)} (reputation.check_interval)"
    for zone, zone_rules in sorted(rules.items()):
        budget = zone_rules.daily_budget
        if budget is None:
            continue
        per_check = ips + PROBE_QUERIES
        allowed = budget * BUDGET_SHARE
        checks_per_day = allowed / per_check
        if checks_per_day <= 0:
            continue
        needed = timedelta(minutes=math.ceil(86400 / checks_per_day / 60))
        if needed > interval:
            interval, stretched = needed, zone
            reason = (
                f"every {_fmt(needed)}: {ips} IPs x {math.ceil(86400 / needed.total_seconds())} "
                f"checks/day stay under {BUDGET_SHARE:.0%} of {zone}'s {budget:,} queries/day "
                f"(reputation.check_interval is {_fmt(policy.check_interval)})"
            )
    return IntervalDecision(interval, stretched, reason)


def _fmt(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{seconds}s" if seconds or not text else "")


# --- a node's reputation: warmup safety, IP life cycle, pause and alerts -----------------


class IpState(StrEnum):
    """The IP life cycle shown in status, plans and metrics."""

    WARMING = "warming"  # following its warmup schedule
    WARMED = "warmed"  # warmup complete, nothing wrong
    DEGRADED = "degraded"  # over an alert level, a report-only listing, or warmup held
    LISTED = "listed"  # on a blocklist with a pause action: out of rotation until delisted
    QUARANTINED = "quarantined"  # bounces/complaints over the pause level: until resumed


@dataclass(frozen=True, slots=True)
class NodeReputationInput:
    """What the reputation assessment of one node reads."""

    name: str
    ip: str | None
    status: NodeStatus
    schedule: WarmupSchedule | None
    warmup_started_at: datetime | None = None
    #: the warmup day stopped advancing at this moment (safety rules); None: advancing
    warmup_held_since: datetime | None = None
    listings: tuple[ListingState, ...] = ()
    #: recorded quarantine (bounces/complaints over the pause level): stays until resumed
    quarantine: str | None = None
    #: rates count only buckets from this moment (set when an operator resumes the node)
    rates_since: datetime | None = None
    buckets: tuple[CountBucket, ...] = ()
    #: messages sent today (UTC day), for the warmup allowance
    sent_today: int = 0


@dataclass(frozen=True, slots=True)
class NodeReputation:
    """The assessment of one node (pure function of its input, the policy and ``now``)."""

    name: str
    ip: str | None
    ip_state: IpState
    pause: bool
    pause_reasons: tuple[str, ...]
    quarantine: str | None
    hold_warmup: bool
    hold_reasons: tuple[str, ...]
    rates: RateVerdict
    warmup_day: int
    daily_limit: int | None  # None: no warmup cap (complete or not warming)
    sent_today: int
    alerts: tuple[AlertCondition, ...] = field(default=())

    @property
    def remaining(self) -> int | None:
        """What it may still send today under its warmup (None: no warmup cap)."""
        if self.daily_limit is None:
            return None
        return max(0, self.daily_limit - self.sent_today)


def effective_warmup_day(
    started_at: datetime | None, held_since: datetime | None, now: datetime
) -> int:
    """The warmup day, frozen while the warmup is held."""
    if started_at is None:
        return 0
    return warmup_day(started_at, min(now, held_since) if held_since is not None else now)


def released_warmup_start(started_at: datetime, held_since: datetime, now: datetime) -> datetime:
    """When a hold ends, the warmup resumes on the day it stopped: its start moves forward by
    the time it was held."""
    return started_at + max(timedelta(0), now - held_since)


def rewarm_due(paused_since: datetime | None, now: datetime, policy: ReputationPolicy) -> bool:
    """A node paused longer than ``rewarm_after`` starts its warmup again when it returns."""
    return paused_since is not None and now - paused_since > policy.rewarm_after


def _condition(
    key: str, severity: Severity, node: str, message: str, policy: ReputationPolicy
) -> AlertCondition | None:
    if policy.action_for(severity) in (ListingAction.IGNORE, ListingAction.REPORT):
        return None
    return AlertCondition(key, alert_severity(severity), node, message)


def assess_node(
    node: NodeReputationInput, policy: ReputationPolicy, now: datetime
) -> NodeReputation:
    """Verdicts for one node: pause (listing with a pause action, quarantine), warmup hold,
    IP state, today's allowance and the alert conditions that hold now."""
    name = node.name
    rates = judge_rates(window_counts(node.buckets, now, policy, node.rates_since), policy)
    day = effective_warmup_day(node.warmup_started_at, node.warmup_held_since, now)
    # warming: inside its schedule (a re-warmed ACTIVE node too), and not leaving the fleet
    warming = (
        node.schedule is not None
        and node.warmup_started_at is not None
        and 1 <= day <= node.schedule.days
        and node.status in (NodeStatus.WARMING, NodeStatus.ACTIVE, NodeStatus.PAUSED)
    )
    alerts: list[AlertCondition] = []
    pause_reasons: list[str] = []
    hold_reasons: list[str] = []
    degraded = False
    safety = node.schedule.safety if node.schedule is not None else None
    for listing in sorted(node.listings, key=lambda item: item.zone):
        where = f"{listing.zone} ({listing.listing}, {', '.join(listing.codes)})"
        action = listing.action
        if warming and safety is not None and action.rank >= ListingAction.ALERT.rank:
            hold_reasons.append(f"listed on {where}")
            if safety.pause_on_blocklist and action is ListingAction.ALERT:
                action = ListingAction.PAUSE  # warmup.safety.pause_on_blocklist
        if action is ListingAction.PAUSE:
            pause_reasons.append(f"listed on {where}")
        elif action is not ListingAction.IGNORE:
            degraded = True
        if action.rank >= ListingAction.ALERT.rank:
            alerts.append(
                AlertCondition(
                    f"listed:{name}:{listing.zone}",
                    alert_severity(listing.severity),
                    name,
                    f"{name} ({listing.ip}) listed on {where} since "
                    f"{listing.listed_at.isoformat(timespec='seconds')}"
                    + (": out of the sending rotation" if action is ListingAction.PAUSE else ""),
                )
            )
    quarantine = node.quarantine
    if quarantine is None and rates.judged:
        if rates.bounce is RateLevel.PAUSE and rates.bounce_rate is not None:
            quarantine = (
                f"hard-bounce rate {rates.bounce_rate:.2%} over {policy.bounce_pause:.2%} "
                f"({rates.counts.hard_bounces} of {rates.counts.attempts})"
            )
        elif rates.complaint is RateLevel.PAUSE and rates.complaint_rate is not None:
            quarantine = (
                f"complaint rate {rates.complaint_rate:.3%} over {policy.complaint_pause:.3%} "
                f"({rates.counts.complaints} of {rates.counts.attempts})"
            )
    if quarantine is not None:
        pause_reasons.append(f"quarantined: {quarantine}")
        alerts.append(
            AlertCondition(
                f"quarantined:{name}",
                AlertSeverity.HIGH,
                name,
                f"{name}: {quarantine}; out of the sending rotation until "
                f"`reconcile node resume {name}`",
            )
        )
    if rates.judged and quarantine is None:
        if rates.bounce is RateLevel.ALERT and rates.bounce_rate is not None:
            degraded = True
            condition = _condition(
                f"bounce:{name}",
                Severity.MEDIUM,
                name,
                f"{name}: hard-bounce rate {rates.bounce_rate:.2%} over "
                f"{policy.bounce_alert:.2%} ({rates.counts.hard_bounces} of "
                f"{rates.counts.attempts})",
                policy,
            )
            if condition is not None:
                alerts.append(condition)
            if policy.medium is ListingAction.PAUSE:
                pause_reasons.append(f"hard-bounce rate {rates.bounce_rate:.2%} (medium: pause)")
        if rates.complaint is RateLevel.ALERT and rates.complaint_rate is not None:
            degraded = True
            condition = _condition(
                f"complaint:{name}",
                Severity.MEDIUM,
                name,
                f"{name}: complaint rate {rates.complaint_rate:.3%} over "
                f"{policy.complaint_alert:.3%} ({rates.counts.complaints} of "
                f"{rates.counts.attempts})",
                policy,
            )
            if condition is not None:
                alerts.append(condition)
            if policy.medium is ListingAction.PAUSE:
                pause_reasons.append(f"complaint rate {rates.complaint_rate:.3%} (medium: pause)")
    if warming and safety is not None and rates.judged:
        if rates.bounce_rate is not None and rates.bounce_rate > safety.max_bounce_rate:
            hold_reasons.append(
                f"hard-bounce rate {rates.bounce_rate:.2%} over warmup.safety.max_bounce_rate "
                f"{safety.max_bounce_rate:.2%}"
            )
        if rates.complaint_rate is not None and rates.complaint_rate > safety.max_complaint_rate:
            hold_reasons.append(
                f"complaint rate {rates.complaint_rate:.3%} over "
                f"warmup.safety.max_complaint_rate {safety.max_complaint_rate:.3%}"
            )
    hold = warming and bool(hold_reasons or pause_reasons)
    if hold and not pause_reasons:
        condition = _condition(
            f"warmup-held:{name}",
            Severity.MEDIUM,
            name,
            f"{name}: warmup held on day {day} (" + "; ".join(hold_reasons) + ")",
            policy,
        )
        if condition is not None:
            alerts.append(condition)
    limit = daily_limit(node.schedule, day) if warming and node.schedule is not None else None
    if limit is not None and node.sent_today > limit:
        condition = _condition(
            f"over-warmup:{name}",
            Severity.MEDIUM,
            name,
            f"{name}: sent {node.sent_today} today, over its warmup limit of {limit} (day {day})",
            policy,
        )
        if condition is not None:
            alerts.append(condition)
    if quarantine is not None:
        state = IpState.QUARANTINED
    elif pause_reasons:
        state = IpState.LISTED
    elif degraded or hold:
        state = IpState.DEGRADED
    elif limit is not None:
        state = IpState.WARMING
    else:
        state = IpState.WARMED
    return NodeReputation(
        name=name,
        ip=node.ip,
        ip_state=state,
        pause=bool(pause_reasons),
        pause_reasons=tuple(pause_reasons),
        quarantine=quarantine,
        hold_warmup=hold,
        hold_reasons=tuple(hold_reasons),
        rates=rates,
        warmup_day=day,
        daily_limit=limit,
        sent_today=node.sent_today,
        alerts=tuple(alerts),
    )


# --- the sending rotation ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationEntry:
    node: str
    ip: str
    region: str
    pool: str | None
    status: NodeStatus
    ip_state: IpState
    daily_limit: int | None
    sent_today: int
    remaining: int | None  # None: no warmup cap


@dataclass(frozen=True, slots=True)
class RotationCandidate:
    name: str
    ip: str | None
    region: str
    pool: str | None
    status: NodeStatus
    unhealthy: bool
    reputation: NodeReputation | None


def rotation(candidates: Iterable[RotationCandidate]) -> tuple[RotationEntry, ...]:
    """The nodes and IPs that may send now: in rotation (warming or active), healthy, with
    an IP, not paused for reputation, and with allowance left today. The sending platform's
    one source of truth: a node not in this list must not be given mail."""
    result: list[RotationEntry] = []
    for node in sorted(candidates, key=lambda c: c.name):
        if not node.status.in_rotation or node.unhealthy or node.ip is None:
            continue
        rep = node.reputation
        if rep is not None and rep.pause:
            continue
        remaining = rep.remaining if rep is not None else None
        if remaining is not None and remaining <= 0:
            continue
        result.append(
            RotationEntry(
                node=node.name,
                ip=node.ip,
                region=node.region,
                pool=node.pool,
                status=node.status,
                ip_state=rep.ip_state if rep is not None else IpState.WARMED,
                daily_limit=rep.daily_limit if rep is not None else None,
                sent_today=rep.sent_today if rep is not None else 0,
                remaining=remaining,
            )
        )
    return tuple(result)


# --- what the store keeps ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReputationRecord:
    """A node's recorded reputation state (``state``'s node_reputation row)."""

    node: str
    ip_state: IpState
    quarantine: str | None = None
    quarantined_at: datetime | None = None
    paused_at: datetime | None = None  # out of rotation for reputation since
    rates_since: datetime | None = None
    warmup_held_since: datetime | None = None
    reasons: str | None = None


@dataclass(frozen=True, slots=True)
class ReputationSnapshot:
    """What one reputation check reads from the store, in a few queries."""

    records: Mapping[str, ReputationRecord]
    listings: tuple[ListingState, ...]
    buckets: Mapping[str, tuple[CountBucket, ...]]
    sent_today: Mapping[str, int]
    queries_today: Mapping[str, int]
