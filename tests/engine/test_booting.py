"""A SHUTOFF server is booted first (``boot``, [DOC] in the API notes), and replaced only if it
is still stopped after ``health.replace_after`` (issue 9). A locked or suspended server, or
one an operator holds, is never booted."""

from __future__ import annotations

from reconciler.core.errors import TerminalError
from reconciler.core.fleet import IntentStatus, NodeStatus, ServerStatus
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Action
from tests.engine.conftest import World, make_spec

SPEC = {"health": {"replace_after": "10m"}}


def _stop_one(world: World, count: int = 3) -> tuple[int, str]:
    spec = make_spec({"dallas": count}, **SPEC)
    world.converge(spec)
    victim = world.cloud.snapshot()[0]
    world.cloud.set_status(victim.service_id, ServerStatus.SHUTOFF)
    return victim.service_id, victim.name


def test_a_stopped_server_is_taken_out_of_rotation_and_booted(world: World) -> None:
    service_id, name = _stop_one(world)
    spec = make_spec({"dallas": 3}, **SPEC)
    plan = world.plan(spec)
    actions = [(c.action, c.address) for c in plan.changes]
    assert actions == [(Action.PAUSE, name), (Action.BOOT, name)]
    assert "boot" in plan.changes[1].reason
    assert {w.guard for w in plan.warnings} == {"stopped"}
    _, report = world.run(spec)
    assert report is not None
    assert report.ok, report
    assert world.cloud.calls["boot"] == 1
    server = next(s for s in world.cloud.snapshot() if s.service_id == service_id)
    assert server.status is ServerStatus.ACTIVE
    boots = [i for i in world.store.journal("acme") if i.kind == "boot"]
    assert [(i.target, i.status) for i in boots] == [(name, IntentStatus.DONE)]
    # a run without heartbeats (the CLI) puts it back into rotation; never destroyed
    node = next(n for n in world.store.load_fleet("acme").nodes if n.name == name)
    assert node.status.in_rotation
    resumes = [i for i in world.store.journal("acme") if i.kind == "resume"]
    assert [i.target for i in resumes] == [name]
    world.clock.advance(15 * 60)
    assert world.plan(spec).is_empty
    assert world.cloud.calls["terminate"] == 0
    world.assert_sound(spec)


def test_in_the_daemon_a_booted_node_waits_for_its_heartbeats(world: World) -> None:
    """With heartbeats known (the daemon), the boot leaves the node out of rotation: its
    health decides when it comes back."""
    _, name = _stop_one(world)
    spec = make_spec({"dallas": 3}, **SPEC)
    daemon = PlanOptions(metrics_known=True)
    plan, report = world.run(spec, options=daemon)
    assert [c.action for c in plan.changes] == [Action.PAUSE, Action.BOOT]
    assert plan.changes[1].status is None
    assert report is not None
    assert report.ok
    node = next(n for n in world.store.load_fleet("acme").nodes if n.name == name)
    assert node.status is NodeStatus.UNHEALTHY


def test_a_server_that_does_not_come_back_is_replaced_after_the_timeout(world: World) -> None:
    service_id, name = _stop_one(world)
    spec = make_spec({"dallas": 3}, **SPEC)
    world.cloud.fail_next("boot", TerminalError("boot failed: refused", refused=True), times=5)
    _, report = world.run(spec)
    assert report is not None
    assert [o.change.action for o in report.failed] == [Action.BOOT]
    world.clock.advance(5 * 60)
    plan, _ = world.run(spec)  # booted again: still refused
    assert [c.action for c in plan.changes] == [Action.BOOT]
    world.clock.advance(6 * 60)  # past health.replace_after: replaced, not booted
    plan = world.plan(spec)
    assert Action.BOOT not in {c.action for c in plan.changes}
    assert (Action.DESTROY, name) in {(c.action, c.address) for c in plan.changes}
    world.converge(spec, runs=6)
    assert service_id not in {s.service_id for s in world.cloud.snapshot()}
    assert world.cloud.calls["boot"] == 2
    world.assert_sound(spec)


def test_locked_suspended_or_held_servers_are_never_booted(world: World) -> None:
    from reconciler.core.fleet import HoldKind, Maintenance

    service_id, name = _stop_one(world)
    spec = make_spec({"dallas": 3}, **SPEC)
    world.cloud.lock(service_id)
    assert Action.BOOT not in {c.action for c in world.plan(spec).changes}
    world.cloud.lock(service_id, locked=False)
    assert Action.BOOT in {c.action for c in world.plan(spec).changes}
    # an operator's maintenance: the operator may have stopped it on purpose
    world.cloud.suspend(service_id)
    assert Action.BOOT not in {c.action for c in world.plan(spec).changes}
    world.cloud.suspend(service_id, suspended=False)
    hold = Maintenance("disk check", "ops@test", world.clock.now(), kind=HoldKind.MAINTENANCE)
    world.store.set_maintenance("acme", name, hold)
    assert Action.BOOT not in {c.action for c in world.plan(spec).changes}
