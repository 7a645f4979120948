"""The life cycle on an advanced clock (no sleeps), straight on the world and over HTTP."""

from __future__ import annotations

import httpx
import pytest

from providers.simulator.clocks import SimClock
from providers.simulator.serving import SimulatorServer
from providers.simulator.world import Settings, SimError, World
from tests.simulator.calling import IMAGE, Call, create


def build(world: World, name: str = "n") -> int:
    (inst,) = world.add_instance(template=IMAGE, rid=52, location_id=12, srvrname=name)
    return inst.serviceid


def status(world: World, serviceid: int) -> str:
    world.settle()
    return world.instances[serviceid].status


def test_build_becomes_active_after_build_seconds(world: World) -> None:
    serviceid = build(world)
    world.clock.advance(9.9)
    assert status(world, serviceid) == "BUILD"
    world.clock.advance(0.1)
    assert status(world, serviceid) == "ACTIVE"
    inst = world.instances[serviceid]
    assert (inst.vm_state, inst.task_state, inst.power_state) == ("active", None, 1)
    assert inst.launched_at == inst.created_at + 10


def test_build_failures_follow_the_rate_and_the_seed() -> None:
    def outcomes(seed: int) -> list[str]:
        world = World(
            clock=SimClock(start=0.0),
            settings=Settings(build_seconds=1, build_failure_rate=0.3, seed=seed),
        )
        ids = [build(world, f"n{i}") for i in range(200)]
        world.clock.advance(1)
        return [status(world, i) for i in ids]

    first = outcomes(1)
    assert first == outcomes(1)  # deterministic
    assert first != outcomes(2)
    failed = first.count("ERROR")
    assert set(first) == {"ACTIVE", "ERROR"}
    assert 30 <= failed <= 90  # about 30 % of 200


def test_a_failure_rate_of_one_fails_every_build(world: World) -> None:
    world.settings.build_failure_rate = 1.0
    ids = [build(world, f"n{i}") for i in range(5)]
    world.clock.advance(10)
    assert {status(world, i) for i in ids} == {"ERROR"}
    inst = world.instances[ids[0]]
    assert (inst.vm_state, inst.power_state) == ("error", 0)


def test_an_error_instance_can_be_terminated(world: World) -> None:
    world.settings.build_failure_rate = 1.0
    serviceid = build(world)
    world.clock.advance(10)
    world.terminate(serviceid)
    assert world.instances == {}


def test_terminate_during_build_removes_it_and_frees_its_ip(world: World) -> None:
    serviceid = build(world)
    ip = world.instances[serviceid].main_ip
    world.terminate(serviceid)
    world.clock.advance(100)
    assert world.settle() == 0
    assert world.instances == {}
    assert ip not in world._assigned


def test_resize_goes_resize_then_resized_then_active(world: World) -> None:
    serviceid = build(world)
    world.clock.advance(10)
    world.upgrade_instance(serviceid, 53)
    world.upgrade_server(serviceid)
    assert status(world, serviceid) == "RESIZE"
    world.clock.advance(19)
    assert status(world, serviceid) == "RESIZE"
    world.clock.advance(1)
    assert status(world, serviceid) == "RESIZED"
    world.confirm_upgrade(serviceid)
    assert status(world, serviceid) == "ACTIVE"
    assert world.instances[serviceid].rid == 53


def test_a_failed_resize_ends_in_error_and_can_be_reverted(world: World) -> None:
    world.settings.resize_failure_rate = 1.0
    serviceid = build(world)
    world.clock.advance(10)
    world.upgrade_instance(serviceid, 54)
    world.upgrade_server(serviceid)
    world.clock.advance(20)
    assert status(world, serviceid) == "ERROR"
    with pytest.raises(SimError):
        world.confirm_upgrade(serviceid)
    world.revert_upgrade(serviceid)
    assert status(world, serviceid) == "ACTIVE"
    assert world.instances[serviceid].rid == 52
    assert world.instances[serviceid].order is None


def test_reboot_passes_through_reboot(world: World) -> None:
    world.settings.reboot_seconds = 5
    serviceid = build(world)
    world.clock.advance(10)
    world.reboot(serviceid)
    assert world.instances[serviceid].task_state == "rebooting"
    assert status(world, serviceid) == "REBOOT"
    world.clock.advance(5)
    assert status(world, serviceid) == "ACTIVE"


def test_transitions_complete_in_due_order_and_only_once(world: World) -> None:
    ids = []
    for n in range(10):
        ids.append(build(world, f"n{n}"))
        world.clock.advance(1)
    assert world.settle() == 1  # only the first is due (created 10 s ago)
    world.clock.advance(100)
    assert world.settle() == 9
    assert world.settle() == 0


def test_lifecycle_over_http_with_the_admin_clock(
    call: Call, sim: SimulatorServer, http: httpx.Client
) -> None:
    serviceid = create(call, "clocked-1")
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "BUILD"
    response = http.post(sim.url + "/sim/clock/advance", json={"seconds": 10})
    assert response.status_code == 200
    assert response.json()["offset_seconds"] == 10
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "ACTIVE"
    assert http.post(sim.url + "/sim/clock/advance", json={"seconds": -1}).status_code == 400
    assert http.post(sim.url + "/sim/clock/advance", content=b"nope").status_code == 400
    assert http.get(sim.url + "/sim/clock").json()["offset_seconds"] == 10


def test_slow_and_failing_builds_switched_at_run_time(
    call: Call, sim: SimulatorServer, http: httpx.Client
) -> None:
    view = http.post(
        sim.url + "/sim/faults", json={"build_seconds": 60, "build_failure_rate": 1.0}
    ).json()
    assert (view["build_seconds"], view["build_failure_rate"]) == (60, 1.0)
    serviceid = create(call, "slow-1")
    sim.clock.advance(59)
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "BUILD"
    sim.clock.advance(1)
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "ERROR"
    http.delete(sim.url + "/sim/faults")
    assert http.get(sim.url + "/sim/faults").json()["build_seconds"] == 10
