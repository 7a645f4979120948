"""The reputation job's assessment cache (``reconciler.daemon.reputation.AssessmentCache``):
whatever the inputs and however time moves (seconds, hours, days, across the warmup's day
boundaries and the rate windows' edges), a kept assessment equals a fresh ``assess_node``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.fleet import NodeStatus
from reconciler.core.reputation import (
    CountBucket,
    NodeReputationInput,
    SendCounts,
    assess_node,
    hour_of,
)
from reconciler.daemon.reputation import AssessmentCache, steady_until
from specs.model import WARMUP_PRESETS, ReputationPolicy

T0 = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


@st.composite
def policies(draw: st.DrawFn) -> ReputationPolicy:
    window = draw(st.integers(1, 48))
    return ReputationPolicy(
        window=timedelta(hours=window),
        max_window=timedelta(hours=window + draw(st.integers(0, 72))),
        min_volume=draw(st.sampled_from([1, 50, 500, 5000])),
    )


@st.composite
def buckets(draw: st.DrawFn) -> tuple[CountBucket, ...]:
    hours = draw(st.lists(st.integers(-150, 6), unique=True, max_size=8))
    return tuple(
        CountBucket(
            hour_of(T0) + h * HOUR,
            SendCounts(
                draw(st.integers(0, 800)),
                draw(st.integers(0, 60)),
                draw(st.integers(0, 5)),
                draw(st.integers(0, 4)),
            ),
        )
        for h in sorted(hours)
    )


@st.composite
def inputs(draw: st.DrawFn) -> NodeReputationInput:
    started = draw(st.none() | st.integers(-40 * 24, 30).map(lambda h: T0 + h * HOUR))
    held = draw(st.none() | st.integers(-100, 60).map(lambda h: T0 + h * HOUR))
    since = draw(st.none() | st.integers(-100, 4).map(lambda h: T0 + h * HOUR))
    return NodeReputationInput(
        name="n1",
        ip="192.0.2.1",
        status=draw(st.sampled_from([NodeStatus.ACTIVE, NodeStatus.WARMING, NodeStatus.PAUSED])),
        schedule=draw(st.sampled_from([None, *WARMUP_PRESETS.values()])),
        warmup_started_at=started,
        warmup_held_since=held,
        rates_since=since,
        buckets=draw(buckets()),
        sent_today=draw(st.integers(0, 3000)),
    )


#: steps of time between runs: a sweep's, an hour and its edges, days
STEPS = st.sampled_from([1, 29, 30, 1799, 1800, 3599, 3600, 3601, 7200, 86399, 86400, 90000])


@settings(max_examples=120, deadline=None)
@given(policies(), st.lists(st.tuples(STEPS, st.booleans(), inputs()), max_size=12), inputs())
def test_a_kept_assessment_equals_a_fresh_one(
    policy: ReputationPolicy,
    runs: list[tuple[int, bool, NodeReputationInput]],
    first: NodeReputationInput,
) -> None:
    cache = AssessmentCache()
    now, node = T0, first
    assert cache.assess(node, policy, now) == assess_node(node, policy, now)
    for seconds, changed, other in runs:
        now += timedelta(seconds=seconds)
        if changed:
            node = other
        assert cache.assess(node, policy, now) == assess_node(node, policy, now)


@settings(max_examples=120, deadline=None)
@given(policies(), inputs(), st.integers(1, 200 * 3600))
def test_steady_until_is_a_moment_before_which_nothing_changes(
    policy: ReputationPolicy, node: NodeReputationInput, seconds: int
) -> None:
    until = steady_until(node, policy, T0)
    later = T0 + timedelta(seconds=seconds)
    if until is not None and later < until:
        assert assess_node(node, policy, later) == assess_node(node, policy, T0)


def test_an_idle_node_is_assessed_once_a_day_and_a_sending_one_when_its_window_moves() -> None:
    policy = ReputationPolicy()
    warmed = NodeReputationInput(
        "n1", "192.0.2.1", NodeStatus.ACTIVE, WARMUP_PRESETS["standard"], T0 - 90 * 24 * HOUR
    )
    assert steady_until(warmed, policy, T0) == T0 - 90 * 24 * HOUR + 91 * 24 * HOUR
    sending = NodeReputationInput(
        "n1",
        "192.0.2.1",
        NodeStatus.ACTIVE,
        None,
        buckets=(CountBucket(hour_of(T0), SendCounts(900)),),
    )
    assert steady_until(sending, policy, T0) == hour_of(T0) + policy.window
    # under min_volume with an hour older than the window: the span moves with every second
    thin = NodeReputationInput(
        "n1",
        "192.0.2.1",
        NodeStatus.ACTIVE,
        None,
        buckets=(CountBucket(hour_of(T0) - 30 * HOUR, SendCounts(10)),),
    )
    assert steady_until(thin, policy, T0) is None


def test_a_hold_still_ahead_does_not_freeze_the_day_before_it() -> None:
    """Found by the property above: a hold three days ahead kept day 1 past midnight."""
    policy = ReputationPolicy(window=timedelta(hours=24), max_window=timedelta(hours=24))
    node = NodeReputationInput(
        name="n1",
        ip="192.0.2.1",
        status=NodeStatus.WARMING,
        schedule=WARMUP_PRESETS["standard"],
        warmup_started_at=T0,
        warmup_held_since=T0 + 72 * HOUR,
    )
    cache = AssessmentCache()
    first, later = T0 + HOUR, T0 + 25 * HOUR
    assert cache.assess(node, policy, first) == assess_node(node, policy, first)
    kept = cache.assess(node, policy, later)
    assert kept == assess_node(node, policy, later)
    assert kept.warmup_day == 2
    until = steady_until(node, policy, first)
    assert until is not None
    assert until <= T0 + 24 * HOUR
