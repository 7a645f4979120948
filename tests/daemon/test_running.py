"""The Daemon in-process with fakes at the boundaries: FakeCloud, InMemoryStore, FakeClock and
a fake leadership. Jobs are called directly (no scheduler, no sleeps)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.fleet import NodeMetrics, NodeStatus
from reconciler.core.plans import Action
from reconciler.daemon.heartbeats import MasterSecret
from reconciler.daemon.running import Daemon, DaemonSettings
from reconciler.daemon.statusing import render_text
from specs.loading import load_spec
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud
from tests.fakes.store import InMemoryStore

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: acme}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
  large: {{rid: 53, vcpu: 2, ram_gb: 4, disk_gb: 75, monthly_price: 19.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {nodes}}}
health: {{heartbeat_interval: 30s, missed_beats: 3, replace_after: 2m}}
scaling: {{max_step: 1}}
"""


class FakeLeadership:
    """LeadershipPort: leads when ``free``; ``check`` answers ``alive``."""

    def __init__(self) -> None:
        self.free = True
        self.alive = True
        self.epoch = 0
        self.checks = 0
        self.fail_check_after: int | None = None

    def try_acquire(self) -> int | None:
        if not self.free:
            return None
        self.epoch += 1
        self.alive = True
        return self.epoch

    def check(self) -> bool:
        self.checks += 1
        if self.fail_check_after is not None and self.checks > self.fail_check_after:
            self.alive = False
        return self.alive

    def release(self) -> None:
        self.alive = False


@dataclasses.dataclass
class World:
    daemon: Daemon
    cloud: FakeCloud
    store: InMemoryStore
    clock: FakeClock
    leadership: FakeLeadership
    spec_path: Path


def make_world(tmp_path: Path, nodes: str = "2") -> World:
    spec_path = tmp_path / "fleet.yaml"
    spec_path.write_text(SPEC.format(nodes=nodes))
    clock = FakeClock()
    cloud = FakeCloud(clock=clock, build_seconds=5)
    store = InMemoryStore(now=clock.now)
    leadership = FakeLeadership()
    loaded = load_spec([spec_path])
    daemon = Daemon(
        DaemonSettings(paths=(str(spec_path),), listen=None, poll_interval=1.0),
        loaded,
        store,
        cloud,
        leadership,
        MasterSecret("a-master-secret-for-tests"),
        clock=clock,
        monotonic=clock.monotonic,
    )
    return World(daemon, cloud, store, clock, leadership, spec_path)


def beat(name: str, world: World, sent: int, queue: int = 0) -> NodeMetrics:
    return NodeMetrics(name, world.clock.now(), 0.2, 0.3, 0.4, queue, sent, 0, 0, 30.0)


def test_only_the_leader_reconciles(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.leadership.free = False

    async def scenario() -> None:
        await world.daemon.guard.tick()
        assert await world.daemon.reconcile_now() is None
        assert world.cloud.mutations == 0
        world.leadership.free = True
        world.clock.advance(60)
        assert await world.daemon.guard.tick()
        plan = await world.daemon.reconcile_now()
        assert plan is not None
        assert [c.action for c in plan.changes] == [Action.CREATE, Action.CREATE]

    asyncio.run(scenario())
    assert {n.name for n in world.store.load_fleet("acme").nodes} == {
        "acme-dallas-001",
        "acme-dallas-002",
    }


def test_leadership_lost_mid_apply_stops_mutations(tmp_path: Path) -> None:
    world = make_world(tmp_path, "3")

    async def scenario() -> None:
        assert await world.daemon.guard.tick()
        world.leadership.fail_check_after = 1  # the second check fails
        await world.daemon.reconcile_now()

    asyncio.run(scenario())
    assert not world.daemon.guard.is_leader
    assert world.cloud.calls.get("add_instance", 0) <= 1
    lost = world.daemon.metrics.registry.get_sample_value(
        "reconciler_reconcile_errors_total", {"kind": "leadership_lost"}
    )
    assert lost == 1.0


def test_silent_node_is_paused_then_replaced_and_a_returning_one_resumes(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        world.store.record_heartbeats("acme", [beat(n, world, 10) for n in names])
        world.clock.advance(60)
        world.store.record_heartbeats("acme", [beat(names[1], world, 10)])
        await daemon._job_sweep()
        assert daemon.assessment.unhealthy == frozenset()
        # names[0] silent for 3 beats: unhealthy, paused at once
        world.clock.advance(31)
        world.store.record_heartbeats("acme", [beat(names[1], world, 10)])
        await daemon._job_sweep()
        assert daemon.assessment.unhealthy == {names[0]}
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address) for c in plan.changes] == [(Action.PAUSE, names[0])]
        statuses = {n.name: n.status for n in world.store.load_fleet("acme").nodes}
        assert statuses[names[0]] is NodeStatus.UNHEALTHY
        # it comes back before replace_after: back into rotation
        world.store.record_heartbeats("acme", [beat(n, world, 10) for n in names])
        await daemon._job_sweep()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address) for c in plan.changes] == [(Action.RESUME, names[0])]
        # silent again, past replace_after (the daemon observing all along): replaced
        for _ in range(25):
            world.clock.advance(10)
            world.store.record_heartbeats("acme", [beat(names[1], world, 10)])
            await daemon._job_sweep()
        assert daemon.assessment.replace == {names[0]}
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address) for c in plan.changes] == [
            (Action.DESTROY, names[0]),
            (Action.CREATE, "acme-dallas-003"),
        ]

    asyncio.run(scenario())


def test_autoscaler_decision_reaches_the_plan(tmp_path: Path) -> None:
    world = make_world(tmp_path, "{min: 2, max: 4}")
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        assert len(names) == 2
        # standard warmup, day 1: 10 emails/day per node; 30 s beats with 1 email each
        # = 2,880/day: far above 80 %
        world.store.record_heartbeats("acme", [beat(n, world, 1) for n in names])
        await daemon._job_autoscale()
        assert daemon.desired_counts == {"dallas": 3}
        reason = daemon.decisions[0].reason
        assert reason.startswith("dallas: 2 -> 3 nodes, utilization ")
        assert "capped at +1 per step" in reason
        plan = await daemon.reconcile_now()
        assert plan is not None
        creates = [c for c in plan.changes if c.action is Action.CREATE]
        assert len(creates) == 1
        assert creates[0].reason == reason
        assert reason in plan.notes

    asyncio.run(scenario())
    assert len(world.store.load_fleet("acme").nodes) == 3


def test_spec_change_is_picked_up(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon
    old_hash = daemon.loaded.spec_hash

    async def scenario() -> None:
        await daemon._job_spec_watch()
        assert daemon.loaded.spec_hash == old_hash
        world.spec_path.write_text(SPEC.format(nodes="3") + "# changed\n")
        await daemon._job_spec_watch()
        assert daemon.loaded.spec_hash != old_hash
        assert daemon.spec.regions["dallas"].nodes == 3
        # a broken edit is refused and the previous spec kept
        world.spec_path.write_text("metadata: [nonsense\n")
        await daemon._job_spec_watch()
        assert daemon.spec.regions["dallas"].nodes == 3

    asyncio.run(scenario())


def test_fleet_document_and_metrics(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        world.store.record_heartbeats("acme", [beat(n, world, 1, queue=600) for n in names])
        await daemon._job_sweep()

    asyncio.run(scenario())
    document = daemon.fleet_document()
    assert document["leader"] is True
    assert [n["health"] for n in document["nodes"]] == ["critical", "critical"]
    assert all(n["daily_limit"] == 10 for n in document["nodes"])
    text = daemon.metrics.render().decode()
    assert 'reconciler_fleet_nodes{region="dallas",status="warming"} 2.0' in text
    assert 'reconciler_node_health_grade{grade="critical",region="dallas"} 2.0' in text
    assert "reconciler_monthly_cost_usd 29.96" in text
    assert "a-master-secret" not in text


@pytest.mark.parametrize("grace", [0.05])
def test_shutdown_abandons_a_stuck_reconcile(tmp_path: Path, grace: float) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon
    daemon.settings = dataclasses.replace(daemon.settings, shutdown_grace=grace)

    async def scenario() -> None:
        blocker = asyncio.Event()

        async def stuck() -> None:
            await blocker.wait()

        daemon._reconcile_task = asyncio.get_running_loop().create_task(stuck())
        await daemon._shutdown(None, None)
        assert daemon._reconcile_task.cancelled()

    asyncio.run(scenario())


VERTICAL = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {name: acme}
plans:
  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}
  large: {rid: 53, vcpu: 2, ram_gb: 4, disk_gb: 75, monthly_price: 19.99}
regions:
  dallas: {location_id: 13, plan: baseline, nodes: 2, vertical_plans: [large]}
scaling:
  vertical: {enabled: true, queue_threshold: 500, window: 2m}
"""


def test_queue_that_stays_high_resizes_the_node_one_plan_up(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.spec_path.write_text(VERTICAL)
    daemon = world.daemon

    async def scenario() -> None:
        await daemon._job_spec_watch()
        assert daemon.spec.scaling.vertical.enabled
        await daemon.guard.tick()
        await daemon.reconcile_now()
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        for _ in range(5):  # 2 minutes of beats: names[0]'s queue above 500 all along
            world.store.record_heartbeats(
                "acme", [beat(names[0], world, 10, queue=900), beat(names[1], world, 10, queue=5)]
            )
            world.clock.advance(30)
        world.store.record_heartbeats(
            "acme", [beat(names[0], world, 10, queue=900), beat(names[1], world, 10, queue=5)]
        )
        await daemon._job_autoscale()
        assert daemon.node_plans == {names[0]: "large"}
        assert daemon.vertical_notes == (f"{names[0]}: baseline -> large, queue above 500 for 2m",)
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address, c.plan) for c in plan.changes] == [
            (Action.RESIZE, names[0], "large")
        ]

    asyncio.run(scenario())
    plans = {n.name: n.plan for n in world.store.load_fleet("acme").nodes}
    assert sorted(plans.values()) == ["baseline", "large"]


def test_fleet_document_before_the_first_sweep_renders(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    document = world.daemon.fleet_document()
    assert document["format_version"] == 1
    assert document["nodes"] == []
    assert "no nodes recorded" in render_text(document)


def test_restart_never_shrinks_an_autoscaled_region_at_once(tmp_path: Path) -> None:
    """After a restart or failover the first plan keeps the region's current size, and the
    autoscaler waits a full scale-down window before shrinking it."""
    world = make_world(tmp_path, "{min: 1, max: 4}")
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        daemon.desired_counts = {"dallas": 3}  # an earlier scale-up
        await daemon.reconcile_now()
        assert len(world.store.load_fleet("acme").nodes) == 3
        # a new daemon over the same store and cloud (a restart / failover)
        fresh = Daemon(
            daemon.settings,
            daemon.loaded,
            world.store,
            world.cloud,
            world.leadership,
            MasterSecret("a-master-secret-for-tests"),
            clock=world.clock,
            monotonic=world.clock.monotonic,
        )
        await fresh._refresh()
        assert fresh.plan_options().desired_counts == {"dallas": 3}
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        world.store.record_heartbeats("acme", [beat(n, world, 0) for n in names])  # idle
        await fresh._job_autoscale()
        assert fresh.desired_counts == {"dallas": 3}
        world.clock.advance(301)
        world.store.record_heartbeats("acme", [beat(n, world, 0) for n in names])
        await fresh._job_autoscale()
        assert fresh.desired_counts == {"dallas": 2}  # one step down, after the window

    asyncio.run(scenario())


# --- a new spec: loaded off the event loop; a refused one leaves the running spec in force ---


def test_a_refused_spec_keeps_the_running_one_with_the_error_in_log_metrics_and_readyz(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    from reconciler.daemon.http import create_app

    world = make_world(tmp_path)
    daemon = world.daemon
    running = daemon.loaded.spec_hash

    async def scenario() -> None:
        world.spec_path.write_text(SPEC.format(nodes="1.0e+99999999"))
        await daemon._job_spec_watch()

    with caplog.at_level("ERROR", logger="reconciler.daemon.running"):
        asyncio.run(scenario())
    assert daemon.loaded.spec_hash == running
    assert daemon.spec.regions["dallas"].nodes == 2
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "spec.invalid"]
    assert "keeping the running spec" in record.getMessage()
    assert "regions.dallas.nodes: the number '1.0e+99999999' is out of range" in (
        record.getMessage()
    )
    assert "reconciler_spec_revision_refused 1.0" in daemon.metrics.render().decode()
    app = create_app(daemon, daemon.metrics, daemon.verifier, daemon.batcher)

    async def readyz() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            return (await client.get("/readyz")).json()

    body = asyncio.run(readyz())
    assert body["spec"]["spec_hash"] == running
    assert body["spec"]["refused"]["revision"].startswith("files:")
    assert f"{world.spec_path}:8:52: regions.dallas.nodes" in body["spec"]["refused"]["error"]
    # a good edit afterwards clears it
    world.spec_path.write_text(SPEC.format(nodes="3"))

    async def fixed() -> None:
        await daemon._job_spec_watch()
        await daemon.guard.tick()
        assert await daemon.reconcile_now() is not None

    asyncio.run(fixed())
    assert daemon.spec.regions["dallas"].nodes == 3
    assert daemon.spec_status()["refused"] is None
    assert "reconciler_spec_revision_refused 0.0" in daemon.metrics.render().decode()


def test_loading_a_spec_never_blocks_the_event_loop_nor_shutdown(tmp_path: Path) -> None:
    import threading
    import time

    from reconciler.daemon.sources import FolderSource

    world = make_world(tmp_path)
    release = threading.Event()
    entered = threading.Event()

    def slow_loader(paths: Any) -> Any:
        entered.set()
        release.wait(30)  # a load that takes "for ever"
        return load_spec(paths)

    daemon = Daemon(
        dataclasses.replace(world.daemon.settings, shutdown_grace=0.05),
        world.daemon.loaded,
        world.store,
        world.cloud,
        world.leadership,
        MasterSecret("a-master-secret-for-tests"),
        clock=world.clock,
        monotonic=world.clock.monotonic,
        source=FolderSource(
            (str(world.spec_path),), loader=slow_loader, loaded=world.daemon.loaded
        ),
    )
    ticks = 0

    async def scenario() -> None:
        nonlocal ticks
        world.spec_path.write_text(SPEC.format(nodes="3"))
        watching = asyncio.get_running_loop().create_task(daemon._job_spec_watch())
        assert await asyncio.to_thread(entered.wait, 5)
        started = time.monotonic()
        while time.monotonic() - started < 0.3:
            await asyncio.sleep(0.01)
            ticks += 1
        assert not watching.done()
        watching.cancel()
        await daemon._shutdown(None, None)

    started = time.monotonic()
    try:
        asyncio.run(scenario())
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert ticks >= 10, "the loop kept running while the spec was being loaded"
    assert elapsed < 5.0, "leaving the loop did not wait for the load"
    assert daemon.spec.regions["dallas"].nodes == 2


PROVISIONING_SPEC = (
    SPEC
    + """\
provisioning:
  domain: mail.example.com
  sink: probe@sink.example.com
  circuit_breaker: {{failures: 2, window: 1h}}
"""
)


def test_an_open_circuit_breaker_is_a_high_alert_until_the_window_clears(tmp_path: Path) -> None:
    """The leader's plan pauses creation in a region whose new nodes keep missing their
    provisioning deadline; the daemon raises it as a high alert of its own
    (circuit_breaker:<region>, reconciler_alert_conditions{kind="circuit_breaker"}) and
    resolves it once the window holds fewer failures."""
    spec_path = tmp_path / "fleet.yaml"
    spec_path.write_text(PROVISIONING_SPEC.format(nodes="2"))
    clock = FakeClock()
    cloud = FakeCloud(clock=clock, build_seconds=5)
    store = InMemoryStore(now=clock.now)
    daemon = Daemon(
        DaemonSettings(paths=(str(spec_path),), listen=None, poll_interval=1.0, dry_run=True),
        load_spec([spec_path]),
        store,
        cloud,
        FakeLeadership(),
        MasterSecret("a-master-secret-for-tests"),
        clock=clock,
        monotonic=clock.monotonic,
    )
    sample = {"kind": "circuit_breaker", "severity": "high"}
    # two nodes of dallas destroyed for missing their deadline (as the engine journals it)
    for n in (7, 8):
        store.begin_intent(
            "acme",
            "destroy",
            f"acme-dallas-00{n}",
            {"region": "dallas", "reason": "provisioning deadline passed (30 min, stuck at dns)"},
            done=True,
        )

    async def scenario() -> None:
        assert await daemon.guard.tick()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert any(w.guard == "circuit_breaker" for w in plan.warnings)
        active = {c.key: c for c in daemon.alerter.active}
        assert "circuit_breaker:dallas" in active
        condition = active["circuit_breaker:dallas"]
        assert condition.severity.label == "high"
        assert "circuit breaker open in dallas: 2 node(s)" in condition.message
        value = daemon.metrics.registry.get_sample_value("reconciler_alert_conditions", sample)
        assert value == 1.0
        # an hour later the failures left the window: creation resumes, the alert resolves
        clock.advance(3700)
        await daemon.guard.tick()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert not any(w.guard == "circuit_breaker" for w in plan.warnings)
        assert "circuit_breaker:dallas" not in {c.key for c in daemon.alerter.active}
        value = daemon.metrics.registry.get_sample_value("reconciler_alert_conditions", sample)
        assert value == 0.0

    asyncio.run(scenario())


def test_a_failed_slot_raises_a_high_alert_and_the_metric(tmp_path: Path) -> None:
    """Issue 9: a create sent whose server never appears, retried once after the adoption
    grace, then the slot fails: the leader's plan raises a high alert (once, keyed by the
    node), reconciler_failed_slots counts it, and it resolves when the operator retries."""
    from reconciler.cli.nodes import _retry_failed_slot
    from reconciler.core.errors import TransientError

    world = make_world(tmp_path, "1")
    lost = TransientError("add_instance failed: timed out; the outcome is unknown")
    world.cloud.fail_next("add_instance", lost, times=2)
    metrics = world.daemon.metrics.registry

    def sample(name: str, labels: dict[str, str] | None = None) -> float | None:
        return metrics.get_sample_value(name, labels or {})

    async def scenario() -> None:
        assert await world.daemon.guard.tick()
        await world.daemon.reconcile_now()  # sent, never appears
        world.clock.advance(6 * 60)
        await world.daemon.reconcile_now()  # the one re-create, lost too
        assert sample("reconciler_failed_slots") == 0
        world.clock.advance(6 * 60)
        for _ in range(3):  # the slot failed: one alert while it lasts
            await world.daemon.reconcile_now()
            world.clock.advance(60)
        active = world.daemon.alerter.active
        assert [(c.key, c.severity.label, c.node) for c in active] == [
            ("slot_failed:acme-dallas-001", "high", "acme-dallas-001")
        ]
        assert "reconcile node retry acme-dallas-001" in active[0].message
        assert sample("reconciler_failed_slots") == 1
        assert sample("reconciler_alerts_total", {"severity": "high"}) == 1
        assert (
            sample("reconciler_alert_conditions", {"kind": "slot_failed", "severity": "high"}) == 1
        )
        fired = [p for p in world.daemon.alerter.sent if p["state"] == "firing"]
        assert [p["key"] for p in fired] == ["slot_failed:acme-dallas-001"]
        # the operator checked the account and retries: the slot is created, the alert ends
        (node,) = world.store.load_fleet("acme").nodes
        assert _retry_failed_slot(world.store, "acme", node, "ops@test", "checked")
        await world.daemon.reconcile_now()
        assert world.daemon.alerter.active == ()
        assert sample("reconciler_failed_slots") == 0
        resolved = [p for p in world.daemon.alerter.sent if p["state"] == "resolved"]
        assert [p["key"] for p in resolved] == ["slot_failed:acme-dallas-001"]

    asyncio.run(scenario())
    assert world.cloud.calls["add_instance"] == 3


def test_a_noop_reconcile_refreshes_the_recorded_costs_only_when_they_may_have_changed(
    tmp_path: Path,
) -> None:
    """Issue 14: a reconcile with nothing to do does not read the whole fleet a second time
    to refresh costs it refreshed already; a new price (spec) or constant brings it back."""
    world = make_world(tmp_path)
    daemon = world.daemon

    def costs() -> set[str]:
        return {str(n.approximate_cost) for n in world.store.load_fleet("acme").nodes}

    async def scenario() -> None:
        assert await daemon.guard.tick()
        for _ in range(6):  # create, build, settle
            await daemon.reconcile_now()
            world.clock.advance(30)
        assert daemon._costs_current_for is not None
        before = costs()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert plan.is_empty
        assert costs() == before
        # a new price: the next run with nothing to apply refreshes the recorded costs
        world.spec_path.write_text(
            SPEC.format(nodes="2").replace("monthly_price: 9.99", "monthly_price: 12.99")
        )
        await daemon._job_spec_watch()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert plan.is_empty
        assert costs() != before

    asyncio.run(scenario())
