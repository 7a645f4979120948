"""Decisions only from trustworthy observations (issue 10): the observation gap and zone
disruption rules of ``core.health.guard_assessment`` (pure), and the daemon applying them
through a store outage (in-process, fakes)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.fleet import NodeStatus, RecordedNode
from reconciler.core.health import assess, detection_window, guard_assessment
from reconciler.core.plans import Action
from specs.model import HealthPolicy
from tests.daemon.test_running import World, beat, make_world

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = HealthPolicy()  # 30 s x 3 missed beats, replace after 10 min
WINDOW = detection_window(POLICY)


def node(
    name: str,
    last: datetime | None,
    region: str = "dallas",
    status: NodeStatus = NodeStatus.ACTIVE,
) -> RecordedNode:
    return RecordedNode(
        id=name,
        fleet="acme",
        name=name,
        region=region,
        plan="small",
        status=status,
        last_heartbeat=last,
    )


def fleet(silent: int, alive: int, now: datetime, region: str = "dallas") -> list[RecordedNode]:
    quiet = [node(f"{region}-s{i}", now - timedelta(minutes=20), region) for i in range(silent)]
    return quiet + [
        node(f"{region}-a{i}", now - timedelta(seconds=5), region) for i in range(alive)
    ]


def test_after_a_gap_nothing_is_paused_or_replaced_until_a_full_window_was_observed() -> None:
    now = T0 + timedelta(hours=1)
    since = now - timedelta(seconds=30)  # the daemon observes again since 30 s (outage over)

    def nodes_at(t: datetime) -> list[RecordedNode]:
        silent = now - timedelta(minutes=20)
        alive = [node(f"dallas-a{i}", t - timedelta(seconds=5)) for i in range(9)]
        return [
            node("dallas-s0", silent),
            node("kept", silent, status=NodeStatus.UNHEALTHY),
            *alive,
        ]

    nodes = nodes_at(now)
    raw = assess(nodes, now, POLICY)
    assert raw.unhealthy == {"dallas-s0", "kept"}
    assert raw.replace == {"dallas-s0", "kept"}
    guarded = guard_assessment(raw, nodes, now, POLICY, observing_since=since, paused={"kept"})
    assert guarded.blind_until == now + timedelta(seconds=60)
    assert guarded.assessment.unhealthy == {"kept"}  # a pause in force stays
    assert guarded.assessment.replace == frozenset()
    assert guarded.held == {"dallas-s0", "kept"}
    # a full window later: paused, but replace_after counts from the end of the window
    later = now + timedelta(seconds=61)
    nodes = nodes_at(later)
    raw = assess(nodes, later, POLICY)
    guarded = guard_assessment(raw, nodes, later, POLICY, observing_since=since, paused={"kept"})
    assert guarded.blind_until is None
    assert guarded.assessment.unhealthy == {"dallas-s0", "kept"}
    assert guarded.assessment.replace == frozenset()
    much_later = now + timedelta(seconds=60) + POLICY.replace_after
    nodes = nodes_at(much_later)
    raw = assess(nodes, much_later, POLICY)
    guarded = guard_assessment(raw, nodes, much_later, POLICY, observing_since=since)
    assert guarded.assessment.replace == {"dallas-s0", "kept"}


def test_a_region_gone_silent_at_once_is_a_disruption_not_dead_nodes() -> None:
    now = T0 + timedelta(hours=1)
    nodes = fleet(4, 2, now) + fleet(0, 6, now, "miami")
    raw = assess(nodes, now, POLICY)
    assert len(raw.replace) == 4  # the raw rules would replace four servers
    guarded = guard_assessment(raw, nodes, now, POLICY, observing_since=T0)
    (disruption,) = guarded.disruptions
    assert (disruption.scope, disruption.silent, disruption.watched) == ("dallas", 4, 6)
    assert guarded.assessment.replace == frozenset()  # no replacement
    assert len(guarded.assessment.unhealthy) == 1  # pausing throttled: one per evaluation
    paused = frozenset(guarded.assessment.unhealthy)
    guarded = guard_assessment(raw, nodes, now, POLICY, observing_since=T0, paused=paused)
    assert len(guarded.assessment.unhealthy) == 2
    assert paused < guarded.assessment.unhealthy
    # one silent node of six elsewhere is the normal rules
    nodes = fleet(1, 5, now)
    guarded = guard_assessment(assess(nodes, now, POLICY), nodes, now, POLICY, observing_since=T0)
    assert guarded.disruptions == ()
    assert guarded.assessment.replace == {"dallas-s0"}


def test_a_fleet_wide_silence_holds_every_region() -> None:
    now = T0 + timedelta(hours=1)
    nodes = fleet(3, 1, now) + fleet(2, 0, now, "miami") + fleet(1, 1, now, "paris")
    guarded = guard_assessment(assess(nodes, now, POLICY), nodes, now, POLICY, observing_since=T0)
    assert [d.scope for d in guarded.disruptions] == ["fleet"]
    assert guarded.assessment.replace == frozenset()
    assert len(guarded.assessment.unhealthy) == 1


def test_the_disruption_thresholds_are_spec_settings() -> None:
    """``health.disruption_share`` and ``health.disruption_min_silent`` (defaults 0.55 and 3)."""
    now = T0 + timedelta(hours=1)
    assert (POLICY.disruption_share, POLICY.disruption_min_silent) == (0.55, 3)
    two_of_three = fleet(2, 1, now)
    raw = assess(two_of_three, now, POLICY)
    # by default two silent nodes of three are no outage: the normal rules replace them
    guarded = guard_assessment(raw, two_of_three, now, POLICY, observing_since=T0)
    assert guarded.disruptions == ()
    assert len(guarded.assessment.replace) == 2
    small = HealthPolicy(disruption_min_silent=2)
    guarded = guard_assessment(raw, two_of_three, now, small, observing_since=T0)
    assert [d.scope for d in guarded.disruptions] == ["fleet"]
    assert guarded.assessment.replace == frozenset()
    # 4 of 10 silent: under the default share, a disruption at a share of 0.4
    nodes = fleet(4, 6, now)
    raw = assess(nodes, now, POLICY)
    assert guard_assessment(raw, nodes, now, POLICY, observing_since=T0).disruptions == ()
    lower = HealthPolicy(disruption_share=0.4)
    assert guard_assessment(raw, nodes, now, lower, observing_since=T0).disruptions != ()
    # a share of 1: only a region gone entirely silent
    whole = HealthPolicy(disruption_share=1.0)
    nodes = fleet(9, 1, now)
    raw = assess(nodes, now, POLICY)
    assert guard_assessment(raw, nodes, now, whole, observing_since=T0).disruptions == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("disruption_share", 0.05),
        ("disruption_share", 1.5),
        ("disruption_share", float("nan")),
        ("disruption_min_silent", 0),
        ("disruption_min_silent", 100_001),
    ],
)
def test_the_disruption_thresholds_are_bounded(field: str, value: float) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        HealthPolicy.model_validate({field: value})


@given(
    silent=st.integers(0, 8),
    alive=st.integers(0, 8),
    gap=st.integers(0, 2000),
    paused=st.sets(st.sampled_from([f"dallas-s{i}" for i in range(8)])),
)
def test_the_guard_never_adds_a_decision(
    silent: int, alive: int, gap: int, paused: set[str]
) -> None:
    now = T0 + timedelta(hours=1)
    nodes = fleet(silent, alive, now)
    raw = assess(nodes, now, POLICY)
    guarded = guard_assessment(
        raw,
        nodes,
        now,
        POLICY,
        observing_since=now - timedelta(seconds=gap),
        paused=frozenset(paused),
    )
    assert guarded.assessment.unhealthy <= raw.unhealthy
    assert guarded.assessment.replace <= raw.replace
    assert (raw.unhealthy | raw.replace) - (
        guarded.assessment.unhealthy | guarded.assessment.replace
    ) <= guarded.held
    if gap < WINDOW.total_seconds():
        assert guarded.assessment.replace == frozenset()
        assert guarded.assessment.unhealthy <= frozenset(paused)


# --- the daemon through a store outage -------------------------------------------------


def sweep_every_10s(world: World, seconds: int, beating: list[str]) -> None:
    async def run() -> None:
        for _ in range(seconds // 10):
            world.clock.advance(10)
            if beating:
                world.store.record_heartbeats("acme", [beat(n, world, 10) for n in beating])
            await world.daemon._job_sweep()

    asyncio.run(run())


def test_a_store_outage_pauses_and_replaces_nothing(tmp_path: Path) -> None:
    world = make_world(tmp_path, "3")
    daemon = world.daemon

    async def start() -> list[str]:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        return sorted(n.name for n in world.store.load_fleet("acme").nodes)

    names = asyncio.run(start())
    sweep_every_10s(world, 200, names)
    # the store goes down for 15 minutes: beats cannot be written (nodes get 503), sweeps fail
    world.store._closed = True
    sweep_every_10s(world, 900, [])
    world.store._closed = False
    # back: every node's last beat is 15 minutes old; no decision until a window passed
    sweep_every_10s(world, 10, [])
    assert daemon.assessment.unhealthy == frozenset()
    assert daemon.assessment.replace == frozenset()
    sweep_every_10s(world, 120, names)  # the agents' beats flow again
    assert daemon.assessment.unhealthy == frozenset()
    plan = asyncio.run(daemon.reconcile_now())
    assert plan is not None
    assert not [c for c in plan.changes if c.action in (Action.PAUSE, Action.DESTROY)]
    held = daemon.metrics.registry.get_sample_value("reconciler_health_decisions_held")
    assert held == 0


def test_most_of_a_region_silent_raises_one_alert_and_replaces_nothing(tmp_path: Path) -> None:
    world = make_world(tmp_path, "4")
    daemon = world.daemon

    async def start() -> list[str]:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        return sorted(n.name for n in world.store.load_fleet("acme").nodes)

    names = asyncio.run(start())
    sweep_every_10s(world, 200, names)
    sweep_every_10s(world, 150, names[:1])  # three of four go silent at once
    assert len(daemon.assessment.unhealthy) == 1  # pausing throttled: one per window
    sweep_every_10s(world, 450, names[:1])  # ten minutes in all
    assert daemon.assessment.replace == frozenset()
    plan = asyncio.run(daemon.reconcile_now())
    assert plan is not None
    assert not [c for c in plan.changes if c.action is Action.DESTROY]
    # the fleet is this one region: the scope is the fleet
    disrupted = daemon.metrics.registry.get_sample_value(
        "reconciler_zone_disruption", {"scope": "fleet"}
    )
    assert disrupted == 1
    keys = [c.key for c in daemon._health_conditions]
    assert keys.count("disruption:fleet") == 1
    paused = daemon.assessment.unhealthy
    assert len(paused) <= 3  # throttled: one more per sweep at most, never the whole region
    assert {k.split(":")[1] for k in keys if k.startswith("down:")} <= paused
    # beats return: normal rules again
    sweep_every_10s(world, 30, names)
    assert daemon.metrics.registry.get_sample_value(
        "reconciler_zone_disruption", {"scope": "fleet"}
    ) in (None, 0)
    assert daemon.assessment.unhealthy == frozenset()


# --- the scheduler and signals ----------------------------------------------------------


def test_an_overrunning_job_is_coalesced_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from reconciler.daemon.running import _quiet_overruns

    world = make_world(tmp_path)
    daemon = world.daemon

    async def slow() -> None:
        await asyncio.sleep(0.6)

    async def scenario() -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(slow, "interval", seconds=0.05, id="slow", max_instances=1, coalesce=True)
        scheduler.add_listener(daemon._job_overrun, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logging.getLogger(name).addFilter(_quiet_overruns)
        scheduler.start()
        await asyncio.sleep(1.5)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.7)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    skipped = daemon.metrics.registry.get_sample_value(
        "reconciler_job_overruns_total", {"job": "slow", "kind": "skipped"}
    )
    assert skipped is not None
    assert skipped >= 5
    overrun_lines = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(overrun_lines) == 1, [r.getMessage() for r in overrun_lines]
    assert overrun_lines[0].name == "reconciler.daemon"


def test_sighup_asks_for_a_spec_reload_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(tmp_path)
    with caplog.at_level(logging.INFO):
        world.daemon.reload()
    assert any(getattr(r, "event", None) == "spec.reload_requested" for r in caplog.records)
