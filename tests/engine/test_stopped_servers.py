"""A stopped server (SHUTOFF, suspended, locked) is never put into rotation (issue 9): not by
a node's pipeline, not by an adoption, not by a warmup's graduation; once it runs again, its
way into service resumes. Found by the stateful test (tests/engine/test_stateful.py): a node
whose create run was killed before its rotation step went to ``warming`` on the next run
although its server was suspended or locked."""

from __future__ import annotations

import contextlib

import pytest

from reconciler.core.fleet import NodeStatus, ServerStatus
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Action
from tests.engine.conftest import Crash, World, crash_at, make_spec
from tests.fakes.cloud import FakeCloud

ALLOW = PlanOptions(allow_mass_destroy=True)
HOW = ("shutoff", "suspended", "locked")


def stop(cloud: FakeCloud, service_id: int, how: str, *, stopped: bool = True) -> None:
    if how == "shutoff":
        status = ServerStatus.SHUTOFF if stopped else ServerStatus.ACTIVE
        cloud.set_status(service_id, status)
    elif how == "suspended":
        cloud.suspend(service_id, stopped)
    else:
        cloud.lock(service_id, stopped)


def only_server(world: World) -> int:
    (server,) = world.cloud.snapshot()
    return server.service_id


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("killed_before", [4, 6])  # before set_rdns; before the rotation step
def test_a_provisioning_node_whose_server_stopped_is_not_put_into_rotation(
    world: World, how: str, killed_before: int
) -> None:
    spec = make_spec({"dallas": 1})
    with contextlib.suppress(Crash):
        world.run(spec, options=ALLOW, before_mutation=crash_at(killed_before))
    world.clock.advance(60)
    sid = only_server(world)
    stop(world.cloud, sid, how)
    rdns_calls = world.cloud.calls["set_rdns"]

    plan, _report = world.run(spec, options=ALLOW)

    (node,) = world.store.load_fleet("acme").nodes
    assert not node.status.in_rotation, (node.status, plan.changes)
    assert not [c for c in plan.changes if c.action in (Action.ACTIVATE, Action.SET_RDNS)]
    assert world.cloud.calls["set_rdns"] == rdns_calls  # nothing sent to a stopped server
    assert any(w.guard == "stopped" for w in plan.warnings) or any(
        how in note or "SHUTOFF" in note for note in plan.notes
    ), (plan.warnings, plan.notes)

    # running again: its way into service resumes
    stop(world.cloud, sid, how, stopped=False)
    world.run(spec, options=ALLOW)
    (node,) = world.store.load_fleet("acme").nodes
    assert node.status.in_rotation or node.status is NodeStatus.UNHEALTHY, node.status


@pytest.mark.parametrize("how", ["suspended", "locked"])
def test_an_adopted_stopped_server_is_recorded_out_of_rotation_without_a_call(
    world: World, how: str
) -> None:
    spec = make_spec({"dallas": 1})
    sid = world.cloud.add_unmanaged("acme-dallas-001", location_id=13, rid=52)
    stop(world.cloud, sid, how)

    plan, report = world.run(spec, options=ALLOW)

    assert report is not None
    assert [o.status.value for o in report.outcomes] == ["done", "done"], report.outcomes
    assert "not brought into service" in report.outcomes[0].message
    (node,) = world.store.load_fleet("acme").nodes
    assert node.status is NodeStatus.UNHEALTHY
    assert world.cloud.calls["set_rdns"] == 0  # a locked server refuses it: never sent
    assert world.cloud.mutations == 0
    assert plan.changes[0].action is Action.ADOPT


@pytest.mark.parametrize("how", HOW)
def test_a_warming_node_whose_server_stopped_does_not_graduate(world: World, how: str) -> None:
    spec = make_spec({"dallas": 1}, ip_pools={"main": {"size": 1, "regions": ["dallas"]}})
    world.converge(spec, options=ALLOW)
    (node,) = world.store.load_fleet("acme").nodes
    assert node.status is NodeStatus.WARMING
    world.clock.advance(90 * 86_400)  # past any warmup schedule
    stop(world.cloud, only_server(world), how)

    plan = world.plan(spec, ALLOW)

    # a SHUTOFF server is also booted (issue 9: boot first, replace after the timeout)
    boot = [Action.BOOT] if how == "shutoff" else []
    assert [c.action for c in plan.changes] == [Action.PAUSE, *boot], plan.changes
    world.run(spec, options=ALLOW)
    (node,) = world.store.load_fleet("acme").nodes
    if boot:
        # booted: ACTIVE again, so back into rotation (a run without heartbeats, the CLI)
        (server,) = world.cloud.snapshot()
        assert server.status is ServerStatus.ACTIVE
        assert node.status.in_rotation
    else:
        assert node.status is NodeStatus.UNHEALTHY
