"""Properties: whatever the sequence of actions, ids and addresses stay unique and consistent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from providers.simulator import handling
from providers.simulator.clocks import SimClock
from providers.simulator.world import FIRST_SERVICEID, Settings, World
from tests.simulator.calling import IMAGE

STEP = st.one_of(
    st.tuples(st.just("add_instance"), st.integers(1, 3), st.sampled_from([51, 52, 53, 99])),
    st.tuples(
        st.sampled_from(
            [
                "terminate",
                "toggle_lock",
                "shutdown",
                "boot",
                "reboot",
                "upgrade_instance",
                "upgrade_server",
                "confirm_upgrade",
                "revert_upgrade",
                "sim_add_ip",
            ]
        ),
        st.integers(0, 30),
        st.sampled_from([53, 54, 55]),
    ),
    st.tuples(st.just("advance"), st.integers(0, 30), st.just(0)),
)


def run(world: World, steps: list[tuple[str, int, int]]) -> set[int]:
    ever: set[int] = set()
    for action, number, rid in steps:
        if action == "advance":
            world.clock.advance(number)
            continue
        if action == "add_instance":
            form = {
                "template": [IMAGE],
                "rid": [str(rid)],
                "location_id": ["12"],
                "qty": [str(number)],
            }
        else:
            ids = sorted(world.instances)
            target = ids[number % len(ids)] if ids else FIRST_SERVICEID + number
            form = {"serviceid": [str(target)], "rid": [str(rid)]}
        outcome = handling.handle(world, action, form)
        assert isinstance(outcome.body, list | dict)
        ever |= set(world.instances)
    return ever


@settings(max_examples=60, deadline=None)
@given(st.lists(STEP, max_size=60), st.integers(0, 3))
def test_ids_and_ips_are_never_shared(steps: list[tuple[str, int, int]], seed: int) -> None:
    world = World(
        clock=SimClock(start=0.0),
        settings=Settings(build_seconds=5, resize_seconds=5, build_failure_rate=0.3, seed=seed),
    )
    ever = run(world, steps)
    addresses = [ip for inst in world.instances.values() for ip in inst.ips]
    assert len(addresses) == len(set(addresses))
    assert set(addresses) == world._assigned
    assert all(inst.serviceid >= FIRST_SERVICEID for inst in world.instances.values())
    assert world.next_serviceid == FIRST_SERVICEID + len(ever)
    for inst in world.instances.values():
        assert inst.status in {"BUILD", "ACTIVE", "ERROR", "SHUTOFF", "REBOOT", "RESIZE", "RESIZED"}
        assert (inst.due_at is not None) == (inst.status in {"BUILD", "REBOOT", "RESIZE"})


@settings(max_examples=30, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_a_dump_restores_to_the_same_world(steps: list[tuple[str, int, int]]) -> None:
    world = World(clock=SimClock(start=0.0), settings=Settings(build_seconds=5))
    run(world, steps)
    again = World(clock=SimClock(start=0.0), settings=Settings(build_seconds=5))
    again.restore(world.dump())
    assert again.dump() == world.dump()
    world.clock.advance(100)
    again.clock.advance(100)
    world.settle()
    again.settle()
    assert again.dump() == world.dump()
