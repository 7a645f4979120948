"""The pure reputation core: answers -> verdicts, probes, hysteresis, rate windows,
warmup safety, the IP life cycle, the check interval and the rotation list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.fleet import NodeStatus
from reconciler.core.health import Severity as AlertSeverity
from reconciler.core.reputation import (
    AnswerKind,
    CountBucket,
    IpState,
    ListingState,
    NodeReputationInput,
    RateLevel,
    RotationCandidate,
    SendCounts,
    Verdict,
    ZoneAnswer,
    ZoneHealth,
    ZoneRules,
    ZoneVerdict,
    assess_node,
    check_interval,
    combine,
    compile_rules,
    effective_warmup_day,
    judge_probe,
    judge_rates,
    read_answer,
    released_warmup_start,
    rewarm_due,
    rotation,
    step_listing,
    window_counts,
)
from specs.blocklists import ListingAction, Severity, parse_code_pattern
from specs.model import WARMUP_PRESETS, BlocklistSpec, ReputationPolicy, WarmupSchedule

NOW = datetime(2026, 11, 23, 18, 30, tzinfo=UTC)
ZEN = "zen.spamhaus.org"


def policy(**fields: Any) -> ReputationPolicy:
    return ReputationPolicy.model_validate(fields)


def rules(zone: str = ZEN, **fields: Any) -> ZoneRules:
    pol = policy(**fields)
    return ZoneRules.from_spec(BlocklistSpec.model_validate(zone), pol)


def answer(*addresses: str, zone: str = ZEN, ip: str = "192.0.2.1") -> ZoneAnswer:
    return ZoneAnswer(zone, ip, AnswerKind.ADDRESSES, addresses, 300)


# --- code patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "code", "matches"),
    [
        ("127.0.0.2", "127.0.0.2", True),
        ("127.0.0.2", "127.0.0.3", False),
        ("127.0.0.[2..11]", "127.0.0.11", True),
        ("127.0.0.[2..11]", "127.0.0.12", False),
        ("127.0.0.[2;4..7;9]", "127.0.0.3", False),
        ("127.0.0.[2;4..7;9]", "127.0.0.9", True),
        ("127.255.255.[252..255]", "127.255.255.254", True),
        ("127.0.0.2", "127.0.0.2.1", False),
        ("127.0.0.2", "::1", False),
    ],
)
def test_code_patterns(pattern: str, code: str, matches: bool) -> None:
    assert parse_code_pattern(pattern).matches(code) is matches


@pytest.mark.parametrize(
    "bad", ["127.0.0", "127.0.0.256", "127.0.0.[11..2]", "127.0.0.[x]", "127.0.0.[", "a.b.c.d"]
)
def test_bad_code_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"127|octet|range|pattern|number"):
        parse_code_pattern(bad)


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_range_patterns_match_exactly_their_range(low: int, high: int, value: int) -> None:
    low, high = min(low, high), max(low, high)
    pattern = parse_code_pattern(f"127.0.0.[{low}..{high}]")
    assert pattern.matches(f"127.0.0.{value}") is (low <= value <= high)


# --- reading answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "verdict", "listing", "action"),
    [
        (("127.0.0.2",), Verdict.LISTED, "SBL", ListingAction.PAUSE),
        (("127.0.0.3",), Verdict.LISTED, "CSS", ListingAction.PAUSE),
        (("127.0.0.4",), Verdict.LISTED, "XBL", ListingAction.PAUSE),
        (("127.0.0.9",), Verdict.LISTED, "DROP", ListingAction.PAUSE),
        (("127.0.0.10",), Verdict.LISTED, "PBL", ListingAction.REPORT),
        (("127.0.0.11",), Verdict.LISTED, "PBL", ListingAction.REPORT),
        # several codes: the most severe counts
        (("127.0.0.10", "127.0.0.4"), Verdict.LISTED, "XBL", ListingAction.PAUSE),
        # Spamhaus error codes are never listings
        (("127.255.255.252",), Verdict.UNKNOWN, None, None),
        (("127.255.255.254",), Verdict.UNKNOWN, None, None),
        (("127.255.255.255",), Verdict.UNKNOWN, None, None),
        (("127.0.0.2", "127.255.255.254"), Verdict.UNKNOWN, None, None),
        # outside 127/8: a parked or dead domain, not a listing
        (("198.51.100.7",), Verdict.UNKNOWN, None, None),
        # an undocumented loopback code: listed with the zone's unmapped severity
        (("127.0.0.42",), Verdict.LISTED, "unmapped code 127.0.0.42", ListingAction.ALERT),
    ],
)
def test_spamhaus_zen_codes(
    codes: tuple[str, ...],
    verdict: Verdict,
    listing: str | None,
    action: ListingAction | None,
) -> None:
    result = read_answer(rules(), answer(*codes))
    assert result.verdict is verdict
    assert result.listing == listing
    assert result.action is action


def test_dqs_key_errors_are_errors() -> None:
    dqs = rules("zen.dq.spamhaus.net")
    for code in ("127.255.255.250", "127.255.255.251"):
        result = read_answer(dqs, answer(code, zone="zen.dq.spamhaus.net"))
        assert result.verdict is Verdict.UNKNOWN
        assert "DQS key" in result.reason


@pytest.mark.parametrize(
    "kind",
    [
        AnswerKind.TIMEOUT,
        AnswerKind.SERVFAIL,
        AnswerKind.REFUSED,
        AnswerKind.FAILED,
        AnswerKind.CIRCUIT_OPEN,
        AnswerKind.BUDGET,
        AnswerKind.UNUSABLE,
    ],
)
def test_failures_are_unknown(kind: AnswerKind) -> None:
    result = read_answer(rules(), ZoneAnswer(ZEN, "192.0.2.1", kind, detail="x"))
    assert result.verdict is Verdict.UNKNOWN
    assert kind.value in result.reason


@pytest.mark.parametrize("kind", [AnswerKind.NXDOMAIN, AnswerKind.NODATA])
def test_no_record_is_not_listed(kind: AnswerKind) -> None:
    assert read_answer(rules(), ZoneAnswer(ZEN, "192.0.2.1", kind)).verdict is Verdict.NOT_LISTED


def test_spec_maps_codes_and_severity_actions() -> None:
    pol = policy(
        high="alert",
        blocklists=[
            {
                "zone": "bl.example.net",
                "listings": [
                    {"codes": "127.0.0.[2..3]", "name": "bad", "severity": "high"},
                    {"codes": "127.0.0.4", "name": "meh", "severity": "low", "action": "pause"},
                ],
            },
            "other.example.org=127.0.0.[2..5]",
        ],
    )
    compiled = compile_rules(pol)
    bad = read_answer(compiled["bl.example.net"], answer("127.0.0.3", zone="bl.example.net"))
    assert (bad.listing, bad.action) == ("bad", ListingAction.ALERT)  # reputation.high
    meh = read_answer(compiled["bl.example.net"], answer("127.0.0.4", zone="bl.example.net"))
    assert (meh.severity, meh.action) == (Severity.LOW, ListingAction.PAUSE)
    other = compiled["other.example.org"]
    assert read_answer(other, answer("127.0.0.5", zone="other.example.org")).listed
    # unknown zones get 127.255.255.x as errors by default
    assert not read_answer(other, answer("127.255.255.254", zone="other.example.org")).listed


def test_listing_rules_may_not_cover_error_codes() -> None:
    with pytest.raises(ValueError, match="never a listing"):
        BlocklistSpec.model_validate({"zone": ZEN, "listings": [{"codes": "127.[0..255].255.254"}]})


@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_an_error_code_in_an_answer_is_never_listed(octets: list[tuple[int, int, int]]) -> None:
    codes = [f"127.{a}.{b}.{c}" for a, b, c in octets] + ["127.255.255.254"]
    for zone in (ZEN, "zen.dq.spamhaus.net", "bl.example.net"):
        assert read_answer(rules(zone), answer(*codes, zone=zone)).verdict is Verdict.UNKNOWN


# --- probes -----------------------------------------------------------------------------------


def probe(listed: ZoneAnswer, clean: ZoneAnswer) -> ZoneHealth:
    return judge_probe(rules(), listed, clean).health


def nx(ip: str) -> ZoneAnswer:
    return ZoneAnswer(ZEN, ip, AnswerKind.NXDOMAIN)


def test_probe_verdicts() -> None:
    good = answer("127.0.0.2", ip="127.0.0.2")
    assert probe(good, nx("127.0.0.1")) is ZoneHealth.USABLE
    assert probe(nx("127.0.0.2"), nx("127.0.0.1")) is ZoneHealth.DEAD
    assert probe(good, answer("127.0.0.2", ip="127.0.0.1")) is ZoneHealth.LISTS_EVERYTHING
    assert (
        probe(answer("127.255.255.254", ip="127.0.0.2"), answer("127.255.255.254", ip="127.0.0.1"))
        is ZoneHealth.ERRORS
    )
    timeout = ZoneAnswer(ZEN, "127.0.0.2", AnswerKind.TIMEOUT, detail="2s")
    assert probe(timeout, nx("127.0.0.1")) is ZoneHealth.UNREACHABLE
    wildcard = judge_probe(rules(), good, answer("127.0.0.2", ip="127.0.0.1"))
    assert "lists everything" in wildcard.reason


def test_combine_ip_verdict() -> None:
    listed = ZoneVerdict(ZEN, "ip", Verdict.LISTED, ("127.0.0.2",), "SBL")
    clean = ZoneVerdict("b", "ip", Verdict.NOT_LISTED)
    unknown = ZoneVerdict("c", "ip", Verdict.UNKNOWN, reason="timeout")
    assert combine("ip", [listed, unknown]).verdict is Verdict.LISTED
    assert combine("ip", [clean, unknown]).verdict is Verdict.UNKNOWN
    assert combine("ip", [clean]).verdict is Verdict.NOT_LISTED
    assert combine("ip", []).verdict is Verdict.UNKNOWN


# --- hysteresis -------------------------------------------------------------------------------


def zv(verdict: Verdict) -> ZoneVerdict:
    if verdict is Verdict.LISTED:
        return ZoneVerdict(
            ZEN, "192.0.2.1", verdict, ("127.0.0.2",), "SBL", Severity.HIGH, ListingAction.PAUSE
        )
    return ZoneVerdict(ZEN, "192.0.2.1", verdict)


def test_listing_opens_at_once_and_closes_after_clean_checks() -> None:
    state, event = step_listing(None, zv(Verdict.LISTED), NOW, 3)
    assert event is not None
    assert event.kind == "listed"
    assert state is not None
    hour = timedelta(hours=1)
    state, event = step_listing(state, zv(Verdict.NOT_LISTED), NOW + hour, 3)
    assert state is not None
    assert state.clean_checks == 1
    state, _ = step_listing(state, zv(Verdict.UNKNOWN), NOW + 2 * hour, 3)  # neither
    assert state is not None
    assert state.clean_checks == 1
    state, _ = step_listing(state, zv(Verdict.NOT_LISTED), NOW + 3 * hour, 3)
    assert state is not None
    assert state.clean_checks == 2
    state, event = step_listing(state, zv(Verdict.NOT_LISTED), NOW + 4 * hour, 3)
    assert state is None
    assert event is not None
    assert event.kind == "delisted"
    assert event.at == NOW + hour  # the first of the clean checks


def test_a_listing_seen_again_resets_the_clean_count() -> None:
    state, _ = step_listing(None, zv(Verdict.LISTED), NOW, 2)
    state, _ = step_listing(state, zv(Verdict.NOT_LISTED), NOW, 2)
    state, event = step_listing(state, zv(Verdict.LISTED), NOW, 2)
    assert state is not None
    assert state.clean_checks == 0
    assert state.listed_at == NOW
    assert event is not None
    assert event.kind == "changed"


@given(st.lists(st.sampled_from(list(Verdict)), max_size=40), st.integers(1, 5))
def test_hysteresis_properties(verdicts: list[Verdict], after: int) -> None:
    state: ListingState | None = None
    clean_run = 0
    for index, verdict in enumerate(verdicts):
        at = NOW + timedelta(hours=index)
        was_open = state is not None
        state, event = step_listing(state, zv(verdict), at, after)
        if verdict is Verdict.LISTED:
            clean_run = 0
            assert state is not None
        elif verdict is Verdict.NOT_LISTED:
            clean_run += 1
        if event is not None and event.kind == "delisted":
            assert was_open
            assert clean_run >= after
        if state is None and was_open:
            assert clean_run >= after
        # an unknown verdict never opens or closes anything
        if verdict is Verdict.UNKNOWN:
            assert (state is not None) == was_open


# --- rates --------------------------------------------------------------------------------------


def buckets(per_hour: SendCounts, hours: int, end: datetime = NOW) -> tuple[CountBucket, ...]:
    top = end.replace(minute=0, second=0, microsecond=0)
    return tuple(CountBucket(top - timedelta(hours=h), per_hour) for h in range(hours))


def test_no_verdict_below_the_minimum_volume() -> None:
    pol = policy(min_volume=500)
    counts = window_counts(buckets(SendCounts(sent=1, hard_bounces=1), 10), NOW, pol)
    assert not counts.judged
    verdict = judge_rates(counts, pol)
    assert verdict.bounce_rate is None
    assert verdict.bounce is RateLevel.OK


def test_window_stretches_to_reach_the_minimum_volume() -> None:
    pol = policy(min_volume=100, window="24h", max_window="7d")
    # 2 messages an hour for 3 days: 48 in 24 h, 100 reached after 50 hours
    counts = window_counts(buckets(SendCounts(sent=2), 72), NOW, pol)
    assert counts.judged
    assert counts.counts.attempts == 100
    assert timedelta(hours=49) <= counts.span <= timedelta(hours=51)


def test_window_does_not_reach_past_max_window_or_a_resume() -> None:
    pol = policy(min_volume=100, window="24h", max_window="2d")
    counts = window_counts(buckets(SendCounts(sent=1), 100), NOW, pol)
    assert not counts.judged
    assert counts.counts.attempts <= 49
    resumed = window_counts(
        buckets(SendCounts(sent=100, hard_bounces=50), 5),
        NOW,
        policy(min_volume=10),
        since=NOW - timedelta(hours=1),
    )
    assert resumed.counts.attempts == 150  # the hour that began after the resume, only


@pytest.mark.parametrize(
    ("hard", "complaints", "bounce", "complaint"),
    [
        (0, 0, RateLevel.OK, RateLevel.OK),
        (30, 0, RateLevel.OK, RateLevel.OK),  # 3 % is the alert level: not over it
        (31, 0, RateLevel.ALERT, RateLevel.OK),
        (51, 0, RateLevel.PAUSE, RateLevel.OK),
        (0, 2, RateLevel.OK, RateLevel.ALERT),  # 0.2 % > 0.1 %
        (0, 6, RateLevel.OK, RateLevel.PAUSE),  # 0.6 % > 0.5 %
    ],
)
def test_rate_thresholds(
    hard: int, complaints: int, bounce: RateLevel, complaint: RateLevel
) -> None:
    pol = policy(min_volume=1000)
    counts = SendCounts(sent=1000 - hard, hard_bounces=hard, complaints=complaints)
    verdict = judge_rates(
        window_counts((CountBucket(NOW.replace(minute=0), counts),), NOW, pol), pol
    )
    assert (verdict.bounce, verdict.complaint) == (bounce, complaint)


@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 50), st.integers(0, 10)),
        min_size=0,
        max_size=200,
    ),
    st.integers(1, 2000),
)
@settings(max_examples=60)
def test_window_properties(hours: list[tuple[int, int, int]], min_volume: int) -> None:
    pol = policy(min_volume=min_volume)
    top = NOW.replace(minute=0)
    series = tuple(
        CountBucket(top - timedelta(hours=h), SendCounts(sent=s, hard_bounces=b, complaints=c))
        for h, (s, b, c) in enumerate(hours)
    )
    result = window_counts(series, NOW, pol)
    assert result.judged == (result.counts.attempts >= min_volume)
    assert result.span <= pol.max_window + timedelta(hours=1)
    total = sum((b.counts for b in series), SendCounts())
    assert result.counts.attempts <= total.attempts
    verdict = judge_rates(result, pol)
    if verdict.bounce_rate is not None:
        assert 0.0 <= verdict.bounce_rate <= 1.0


# --- the check interval and budgets ----------------------------------------------------------


def test_interval_is_stretched_to_stay_within_the_budget() -> None:
    pol = policy(check_interval="1h", blocklists=[ZEN, "b.barracudacentral.org"])
    compiled = compile_rules(pol)
    small = check_interval(pol, 100, compiled)
    assert small.interval == timedelta(hours=1)
    assert small.stretched_by is None
    # 10,000 IPs x 24 checks = 240,000 + probes: under 90 % of 300,000? no (270,000 > 240,048)
    fleet = check_interval(pol, 10_000, compiled)
    assert fleet.interval == timedelta(hours=1)
    big = check_interval(pol, 20_000, compiled)
    assert big.stretched_by == ZEN
    checks_per_day = 86400 / big.interval.total_seconds()
    assert (20_000 + 2) * checks_per_day <= 300_000 * 0.9
    assert "zen.spamhaus.org" in big.reason


@given(st.integers(0, 1_000_000), st.integers(1, 10_000_000))
def test_stretched_interval_always_respects_the_budget(ips: int, budget: int) -> None:
    pol = policy(blocklists=[{"zone": "bl.example.net", "daily_budget": budget}])
    decision = check_interval(pol, ips, compile_rules(pol))
    per_day = (ips + 2) * 86400 / decision.interval.total_seconds()
    assert per_day <= budget * 0.9 + 1e-6
    assert decision.interval >= pol.check_interval


# --- node assessment ---------------------------------------------------------------------------

STANDARD = WARMUP_PRESETS["standard"]


def listing(
    action: ListingAction, severity: Severity = Severity.HIGH, zone: str = ZEN
) -> ListingState:
    return ListingState(
        "192.0.2.1", zone, NOW - timedelta(hours=2), ("127.0.0.2",), "SBL", severity, action
    )


def node(**fields: Any) -> NodeReputationInput:
    base: dict[str, Any] = {
        "name": "acme-dallas-001",
        "ip": "192.0.2.1",
        "status": NodeStatus.ACTIVE,
        "schedule": STANDARD,
        "warmup_started_at": NOW - timedelta(days=100),
    }
    base.update(fields)
    return NodeReputationInput(**base)


def test_a_clean_warmed_node() -> None:
    result = assess_node(node(), policy(), NOW)
    assert result.ip_state is IpState.WARMED
    assert not result.pause
    assert not result.alerts
    assert result.daily_limit is None
    assert result.remaining is None


def test_a_pause_listing_pauses_and_alerts_high() -> None:
    result = assess_node(node(listings=(listing(ListingAction.PAUSE),)), policy(), NOW)
    assert result.pause
    assert result.ip_state is IpState.LISTED
    assert [a.severity for a in result.alerts] == [AlertSeverity.HIGH]
    assert "out of the sending rotation" in result.alerts[0].message


def test_a_report_listing_degrades_without_alert() -> None:
    result = assess_node(
        node(listings=(listing(ListingAction.REPORT, Severity.LOW),)), policy(), NOW
    )
    assert not result.pause
    assert result.ip_state is IpState.DEGRADED
    assert not result.alerts


def test_bounces_over_the_pause_level_quarantine() -> None:
    counts = SendCounts(sent=940, hard_bounces=60)
    result = assess_node(node(buckets=buckets(counts, 1)), policy(min_volume=500), NOW)
    assert result.pause
    assert result.ip_state is IpState.QUARANTINED
    assert result.quarantine is not None
    assert "6.00%" in result.quarantine
    assert any(a.key.startswith("quarantined:") for a in result.alerts)


def test_bounces_over_the_alert_level_alert_medium() -> None:
    counts = SendCounts(sent=960, hard_bounces=40)
    result = assess_node(node(buckets=buckets(counts, 1)), policy(min_volume=500), NOW)
    assert not result.pause
    assert result.ip_state is IpState.DEGRADED
    assert [(a.key, a.severity) for a in result.alerts] == [
        ("bounce:acme-dallas-001", AlertSeverity.MEDIUM)
    ]
    silent = assess_node(
        node(buckets=buckets(counts, 1)), policy(min_volume=500, medium="ignore"), NOW
    )
    assert not silent.alerts
    pausing = assess_node(
        node(buckets=buckets(counts, 1)), policy(min_volume=500, medium="pause"), NOW
    )
    assert pausing.pause


def test_recorded_quarantine_stays_until_resumed() -> None:
    result = assess_node(node(quarantine="hard-bounce rate 9%"), policy(), NOW)
    assert result.pause
    assert result.ip_state is IpState.QUARANTINED


def warming_node(**fields: Any) -> NodeReputationInput:
    return node(
        status=NodeStatus.WARMING, warmup_started_at=NOW - timedelta(days=9, hours=1), **fields
    )


def test_warming_node_allowance_and_over_limit_alert() -> None:
    result = assess_node(warming_node(sent_today=20), policy(), NOW)
    assert result.warmup_day == 10
    assert result.ip_state is IpState.WARMING
    assert result.daily_limit == 10 + (100 - 10) * 9 // 13
    assert result.remaining == result.daily_limit - 20
    over = assess_node(warming_node(sent_today=500), policy(), NOW)
    assert over.remaining == 0
    assert [a.key for a in over.alerts] == ["over-warmup:acme-dallas-001"]


def test_warmup_safety_holds_the_warmup_day() -> None:
    # 4 % bounces: under the pause level (5 %) but over a stricter warmup safety rule (2 %)
    strict = WarmupSchedule.model_validate(
        {"phases": [{"days": "1-14", "start": 10, "end": 100}], "safety": {"max_bounce_rate": 0.02}}
    )
    counts = SendCounts(sent=480, hard_bounces=20)
    result = assess_node(
        warming_node(schedule=strict, buckets=buckets(counts, 1)), policy(min_volume=500), NOW
    )
    assert result.hold_warmup
    assert not result.pause
    assert any("max_bounce_rate" in r for r in result.hold_reasons)
    assert "warmup-held:acme-dallas-001" in [a.key for a in result.alerts]


def test_pause_on_blocklist_pauses_a_warming_node_on_an_alert_listing() -> None:
    alert_listing = (listing(ListingAction.ALERT, Severity.MEDIUM),)
    warm = assess_node(warming_node(listings=alert_listing), policy(), NOW)
    assert warm.pause
    assert warm.hold_warmup
    no_pause_schedule = WarmupSchedule.model_validate(
        {
            "phases": [{"days": "1-42", "start": 10, "end": 500}],
            "safety": {"pause_on_blocklist": False},
        }
    )
    held = assess_node(
        warming_node(listings=alert_listing, schedule=no_pause_schedule), policy(), NOW
    )
    assert not held.pause
    assert held.hold_warmup
    # a warmed node is not paused for an alert-only listing
    assert not assess_node(node(listings=alert_listing), policy(), NOW).pause


def test_held_warmup_day_is_frozen_and_resumes_where_it_stopped() -> None:
    started = NOW - timedelta(days=10)
    held_since = NOW - timedelta(days=4)
    assert effective_warmup_day(started, held_since, NOW) == 7
    assert effective_warmup_day(started, None, NOW) == 11
    new_start = released_warmup_start(started, held_since, NOW)
    assert effective_warmup_day(new_start, None, NOW) == 7


def test_long_pause_rewarms() -> None:
    pol = policy(rewarm_after="30d")
    assert rewarm_due(NOW - timedelta(days=31), NOW, pol)
    assert not rewarm_due(NOW - timedelta(days=3), NOW, pol)
    assert not rewarm_due(None, NOW, pol)


# --- the rotation ------------------------------------------------------------------------------


def candidate(name: str, **fields: Any) -> RotationCandidate:
    base: dict[str, Any] = {
        "name": name,
        "ip": "192.0.2.1",
        "region": "dallas",
        "pool": "shared",
        "status": NodeStatus.ACTIVE,
        "unhealthy": False,
        "reputation": None,
    }
    base.update(fields)
    return RotationCandidate(**base)


def test_rotation_lists_only_nodes_that_may_send_now() -> None:
    pol = policy()
    listed = assess_node(node(listings=(listing(ListingAction.PAUSE),)), pol, NOW)
    warming = assess_node(warming_node(sent_today=5), pol, NOW)
    spent = assess_node(warming_node(sent_today=10_000), pol, NOW)
    entries = rotation(
        [
            candidate("a"),
            candidate("b", reputation=listed),
            candidate("c", unhealthy=True),
            candidate("d", status=NodeStatus.PAUSED),
            candidate("e", ip=None),
            candidate("f", status=NodeStatus.WARMING, reputation=warming),
            candidate("g", status=NodeStatus.WARMING, reputation=spent),
            candidate("h", status=NodeStatus.DRAINING),
        ]
    )
    assert [e.node for e in entries] == ["a", "f"]
    assert entries[1].remaining == warming.daily_limit - 5 if warming.daily_limit else False
    assert entries[0].remaining is None
