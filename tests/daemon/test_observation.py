"""Decisions only from trustworthy observations (issue 10): the observation gap and zone
disruption rules of ``core.health.guard_assessment`` (pure), and the daemon applying them
through a store outage (in-process, fakes)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.errors import StoreError
from reconciler.core.fleet import NodeStatus, RecordedNode
from reconciler.core.health import assess, detection_window, guard_assessment
from reconciler.core.plans import Action
from reconciler.daemon.heartbeats import MasterSecret, Outcome
from reconciler.daemon.http import create_app
from reconciler.daemon.running import Daemon
from specs.loading import load_spec
from specs.model import HealthPolicy
from tests.daemon.test_running import World, beat, make_world

_T = TypeVar("_T")
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


async def reconciled_names(world: World, daemon: Daemon) -> list[str]:
    """``daemon`` takes leadership and reconciles; the names of the nodes it made."""
    await daemon.guard.tick()
    await daemon.reconcile_now()
    return sorted(n.name for n in world.store.load_fleet("acme").nodes)


def lead_and_reconcile(world: World, daemon: Daemon) -> list[str]:
    """``reconciled_names`` outside an event loop."""
    return asyncio.run(reconciled_names(world, daemon))


def sweep_every_10s(world: World, seconds: int, beating: list[str]) -> None:
    async def run() -> None:
        for _ in range(seconds // 10):
            world.clock.advance(10)
            if beating:
                world.store.record_heartbeats("acme", [beat(n, world, 10) for n in beating])
            await world.daemon._job_sweep()

    asyncio.run(run())


def restarted(world: World, monotonic: Callable[[], float] | None = None) -> Daemon:
    """A new daemon process on the same store, cloud, clock and leadership."""
    old = world.daemon
    return Daemon(
        old.settings,
        load_spec([world.spec_path]),
        world.store,
        world.cloud,
        world.leadership,
        MasterSecret("a-master-secret-for-tests"),
        clock=world.clock,
        monotonic=monotonic or world.clock.monotonic,
    )


async def through_the_intake(daemon: Daemon, world: World, names: list[str]) -> set[Outcome]:
    """The nodes' beats offered to the daemon's heartbeat intake (its batcher), as the HTTP
    handler does; the outcomes once their batch was written (or could not be)."""
    futures = [daemon.batcher.offer(beat(n, world, 10)) for n in names]
    return {await f for f in futures if f is not None}


def gap_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "health.observation_gap"]


@pytest.mark.parametrize("outage", [900, 20])
def test_a_store_outage_pauses_and_replaces_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: int
) -> None:
    """The store down for ``outage`` seconds (the sweeps fail, the beats cannot be written):
    no pause, no replacement, and the window counts from the first sweep that read the store
    again, not from the last one that could not."""
    caplog.set_level(logging.INFO, logger="reconciler")
    world = make_world(tmp_path, "3")
    daemon = world.daemon

    names = lead_and_reconcile(world, daemon)
    sweep_every_10s(world, 200, names)
    # the store goes down: beats cannot be written (nodes get 503), sweeps fail
    world.store._closed = True
    sweep_every_10s(world, outage, [])
    world.store._closed = False
    # back: every node's last beat is as old as the outage; no decision until a window passed
    sweep_every_10s(world, 10, [])
    back = world.clock.now()
    *_, gap = gap_lines(caplog)
    assert datetime.fromisoformat(gap.since) == back
    assert (gap.cause, gap.ongoing) == ("store", False)
    assert daemon.assessment.unhealthy == frozenset()
    assert daemon.assessment.replace == frozenset()
    sweep_every_10s(world, 120, names)  # the agents' beats flow again
    assert daemon.assessment.unhealthy == frozenset()
    plan = asyncio.run(daemon.reconcile_now())
    assert plan is not None
    assert not [c for c in plan.changes if c.action in (Action.PAUSE, Action.DESTROY)]
    held = daemon.metrics.registry.get_sample_value("reconciler_health_decisions_held")
    assert held == 0


@pytest.mark.parametrize(
    "failure",
    [
        600,  # ten minutes: every sweep meanwhile sees the intake failing
        35,  # a beat interval and 5 s, all between two sweeps: no sweep sees it over 30 s
    ],
)
def test_after_the_intake_could_not_write_no_node_is_judged_until_a_window_after_it_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: int
) -> None:
    """The store answers the sweeps but the heartbeat intake cannot write a beat (503 to every
    node) for ``failure`` seconds: no node is paused while it fails, nor until a full detection
    window (3 missed beats x 30 s) of fresh beats has passed since its first write again, not
    since the last sweep that saw it failing. A node that stays silent is paused then."""
    caplog.set_level(logging.INFO, logger="reconciler")
    world = make_world(tmp_path, "3")
    clock = world.clock
    # the wall clock runs 500 ppm fast of the monotonic one (slewed by NTP at its most): the
    # daemon must not take a failure's end, converted to wall time, as a new gap every sweep
    daemon = restarted(world, lambda: clock.monotonic() * (1 - 500e-6))
    start = clock.now()

    def at(seconds: float) -> None:
        clock.advance((start + timedelta(seconds=seconds) - clock.now()).total_seconds())

    async def scenario() -> None:
        names = await reconciled_names(world, daemon)
        alive, silent = names[:2], names[2]
        # observed for 200 s, every beat through the intake (``silent``'s agent is gone with
        # the failure: it never beats again)
        for t in range(10, 210, 10):
            at(t)
            assert await through_the_intake(daemon, world, names) == {Outcome.RECORDED}
            await daemon._job_sweep()
            assert daemon.assessment.unhealthy == frozenset()
        # 2 s after a sweep, the intake's writes fail: the agents get 503 and resend
        at(202)
        world.store.fail_heartbeats = StoreError("heartbeat table locked")
        assert await through_the_intake(daemon, world, alive) == {Outcome.UNAVAILABLE}
        recovered = 202 + failure
        t = 210
        while t < recovered:
            at(t)
            assert await through_the_intake(daemon, world, alive) == {Outcome.UNAVAILABLE}
            await daemon._job_sweep()
            assert daemon.assessment.unhealthy == frozenset(), t
            t += 10
        # the intake writes again: the agents' resent beats are recorded; ``silent`` is gone
        at(recovered)
        world.store.fail_heartbeats = None
        assert await through_the_intake(daemon, world, alive) == {Outcome.RECORDED}
        blind_until = recovered + WINDOW.total_seconds()
        while t < blind_until:
            at(t)
            assert await through_the_intake(daemon, world, alive) == {Outcome.RECORDED}
            await daemon._job_sweep()
            assert daemon.assessment.unhealthy == frozenset(), (t, blind_until)
            t += 10
        plan = await daemon.reconcile_now()  # the last sweep before the window ends
        assert plan is not None
        assert not [c for c in plan.changes if c.action in (Action.PAUSE, Action.DESTROY)]
        # a full window since the intake recovered: the silent node is judged, only it
        at(t)
        assert await through_the_intake(daemon, world, alive) == {Outcome.RECORDED}
        await daemon._job_sweep()
        assert daemon.assessment.unhealthy == {silent}
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address) for c in plan.changes] == [(Action.PAUSE, silent)]
        await daemon.batcher.aclose()

    asyncio.run(scenario())
    # one line when the gap began (the intake still failing: its end not known yet), one
    # when it ended, which says from when the window counts; none per sweep meanwhile
    startup, *failing, ended = gap_lines(caplog)
    assert (startup.cause, startup.ongoing) == ("start", False)
    assert [(r.cause, r.ongoing) for r in failing] == [("intake", True)] * (failure > 100)
    assert (ended.cause, ended.ongoing) == ("intake", False)
    recovered = start + timedelta(seconds=202 + failure)
    assert abs(datetime.fromisoformat(ended.since) - recovered) < timedelta(seconds=1)
    assert datetime.fromisoformat(ended.until) - datetime.fromisoformat(ended.since) == WINDOW


class IntakeThread:
    """The daemon's heartbeat intake (its real batcher) on its own thread and event loop, as
    the HTTP server runs it. ``freeze`` blocks that loop with a callback that does not return
    (a frozen intake loop: no write fails, the beats simply cannot be received) until
    ``thaw``."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="intake", daemon=True)
        self.thread.start()
        self._frozen = threading.Event()
        self._thawed = threading.Event()

        async def start() -> None:
            daemon.batcher.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    async def call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    async def offer(self, world: World, names: list[str]) -> set[Outcome]:
        return await self.call(through_the_intake(self.daemon, world, names))

    def freeze(self) -> None:
        def block() -> None:
            self._frozen.set()
            self._thawed.wait(30)

        self._thawed.clear()
        self.loop.call_soon_threadsafe(block)
        assert self._frozen.wait(10)

    def thaw(self) -> None:
        self._frozen.clear()
        self._thawed.set()

    def close(self) -> None:
        self.thaw()
        asyncio.run_coroutine_threadsafe(self.daemon.batcher.aclose(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_stalled_intake_is_an_observation_gap_until_a_window_after_it_runs_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat intake's loop is frozen for two minutes while the store is fine and no
    write fails: no beat can be received, so every node looks silent. No node is paused while
    it is frozen, nor until a full detection window since its loop ticked again (2 s after a
    sweep saw it still frozen); ``/healthz`` and ``/readyz`` say it is stalled meanwhile. A
    node that stays silent is paused then, and only it."""
    caplog.set_level(logging.INFO, logger="reconciler")
    world = make_world(tmp_path, "3")
    daemon, clock = world.daemon, world.clock
    start = clock.now()
    app = create_app(daemon, daemon.metrics, daemon.verifier, daemon.batcher)

    def at(seconds: float) -> None:
        clock.advance((start + timedelta(seconds=seconds) - clock.now()).total_seconds())

    async def probe(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            return await client.get(path)

    intake = IntakeThread(daemon)
    thawed = 322

    async def beats_until(seconds: float, names: list[str]) -> None:
        """The agents' beats through the intake, each 5 s (the fake clock jumps: a longer
        jump between two of the intake's ticks would look like a stall of its loop)."""
        now = (clock.now() - start).total_seconds()
        while now < seconds:
            now = min(seconds, now + 5)
            at(now)
            assert await intake.offer(world, names) == {Outcome.RECORDED}, now

    async def scenario() -> None:
        names = await reconciled_names(world, daemon)
        alive, silent = names[:2], names[2]
        for t in range(10, 210, 10):
            await beats_until(t, names)
            await daemon._job_sweep()
            assert daemon.assessment.unhealthy == frozenset()
        assert (await probe("/healthz")).status_code == 200
        # right after the sweep at 200 s the intake's loop freezes (``silent``'s agent is
        # gone meanwhile): two minutes with no beat received, every node silent
        intake.freeze()
        t = 210
        while t <= 320:
            at(t)
            await daemon._job_sweep()
            assert daemon.assessment.unhealthy == frozenset(), t
            if t == 250:
                health, ready = await probe("/healthz"), await probe("/readyz")
                assert (health.status_code, health.json()) == (
                    503,
                    {"status": "unhealthy", "intake": "stalled"},
                )
                assert ready.status_code == 503
                assert ready.json()["intake"] == "stalled"
                assert ready.json()["store"] == "reachable"
            t += 10
        # 2 s after a sweep that saw it frozen, the loop runs again: the beats flow
        at(thawed)
        intake.thaw()
        assert await intake.offer(world, alive) == {Outcome.RECORDED}
        assert (await probe("/healthz")).json() == {"status": "ok"}
        assert (await probe("/readyz")).json()["intake"] == "receiving"
        blind_until = thawed + WINDOW.total_seconds()
        while t < blind_until:
            await beats_until(t, alive)
            await daemon._job_sweep()
            assert daemon.assessment.unhealthy == frozenset(), (t, blind_until)
            t += 10
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert not [c for c in plan.changes if c.action in (Action.PAUSE, Action.DESTROY)]
        # a full window since the intake ran again: the silent node is judged, only it
        await beats_until(t, alive)
        await daemon._job_sweep()
        assert daemon.assessment.unhealthy == {silent}
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address) for c in plan.changes] == [(Action.PAUSE, silent)]

    try:
        asyncio.run(scenario())
    finally:
        intake.close()
    startup, frozen, ended = gap_lines(caplog)
    assert (startup.cause, startup.ongoing) == ("start", False)
    assert (frozen.cause, frozen.ongoing) == ("intake", True)
    assert (ended.cause, ended.ongoing) == ("intake", False)
    ran_again = start + timedelta(seconds=thawed)
    assert abs(datetime.fromisoformat(ended.since) - ran_again) < timedelta(seconds=1)
    assert datetime.fromisoformat(ended.until) - datetime.fromisoformat(ended.since) == WINDOW


def test_a_restart_judges_no_node_on_the_silence_that_covered_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon is down for two minutes (no beat can be recorded meanwhile), then starts
    again: no node is paused until a full detection window has passed since the start,
    although every node's last beat is older than that; a node that stays silent is paused
    then, and only it."""
    caplog.set_level(logging.INFO, logger="reconciler")
    world = make_world(tmp_path, "3")
    first = world.daemon

    names = lead_and_reconcile(world, first)
    alive, silent = names[:2], names[2]
    sweep_every_10s(world, 140, names)
    sweep_every_10s(world, 60, alive)  # ``silent`` stops a minute before the stop
    world.clock.advance(120)  # down: the agents' beats find no daemon
    caplog.clear()
    daemon = restarted(world)
    started = world.clock.now()

    def at(seconds: float) -> None:
        world.clock.advance(
            (started + timedelta(seconds=seconds) - world.clock.now()).total_seconds()
        )

    async def after() -> None:
        assert await daemon.guard.tick()
        # as ``run`` starts: a full load and a first sweep
        await daemon._refresh(initial=True)
        await daemon._job_sweep()
        assert daemon.assessment.unhealthy == frozenset()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert not [c for c in plan.changes if c.action in (Action.PAUSE, Action.DESTROY)]
        at(3)  # the agents find the daemon again (not ``silent``'s)
        world.store.record_heartbeats("acme", [beat(n, world, 10) for n in alive])
        for t in range(10, 90, 10):
            at(t)
            world.store.record_heartbeats("acme", [beat(n, world, 10) for n in alive])
            await daemon._job_sweep()
            assert daemon.assessment.unhealthy == frozenset(), t
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert not [c for c in plan.changes if c.action in (Action.PAUSE, Action.DESTROY)]
        # a full window since the start: the silent node is judged, only it
        at(WINDOW.total_seconds())
        world.store.record_heartbeats("acme", [beat(n, world, 10) for n in alive])
        await daemon._job_sweep()
        assert daemon.assessment.unhealthy == {silent}
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address) for c in plan.changes] == [(Action.PAUSE, silent)]

    asyncio.run(after())
    (gap,) = gap_lines(caplog)
    assert gap.cause == "start"
    assert datetime.fromisoformat(gap.until) == started + WINDOW


def test_most_of_a_region_silent_raises_one_alert_and_replaces_nothing(tmp_path: Path) -> None:
    world = make_world(tmp_path, "4")
    daemon = world.daemon

    names = lead_and_reconcile(world, daemon)
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
