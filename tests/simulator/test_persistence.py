"""The --state file: atomic writes, restart sees the world as it was left, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from providers.simulator.clocks import SimClock
from providers.simulator.persisting import SimulatorStateError, StateFile
from providers.simulator.serving import SimulatorServer
from providers.simulator.world import Settings, World
from tests.simulator.calling import IMAGE, KEY, create, make_call

START = 1_800_000_000.0


def test_a_restarted_server_sees_the_world_as_it_was_left(
    tmp_path: Path, http: httpx.Client
) -> None:
    state = tmp_path / "state" / "sim.json"
    with SimulatorServer(state_path=state, api_key=KEY, build_seconds=10) as sim:
        call = make_call(http, sim)
        first = create(call, "keep-1")
        second = create(call, "keep-2")
        call("toggle_lock", serviceid=second)
        http.post(sim.url + "/sim/clock/advance", json={"seconds": 10})
        call("set_rdns", serviceid=first, ip=sim.world.instances[first].main_ip, rdns="a.example")
        before = call("get_instances")["success"]
    assert state.exists()
    assert not list(state.parent.glob("*.tmp"))
    with SimulatorServer(state_path=state, api_key=KEY, build_seconds=10) as sim:
        call = make_call(http, sim)
        after = call("get_instances")["success"]
        assert after == before
        assert {i["status"] for i in after} == {"ACTIVE"}
        third = create(call, "keep-3")
        assert third > second  # serviceids are never reused
        main_ips = {i["main_ip"] for i in call("get_instances")["success"]}
        assert len(main_ips) == 3


def test_a_build_in_progress_completes_after_a_restart(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "sim.json")
    world = World(clock=SimClock(start=START), settings=Settings(build_seconds=30))
    (inst,) = world.add_instance(template=IMAGE, rid=52, location_id=12, srvrname="b")
    world.clock.advance(5)
    state.save(world)
    again = World(clock=SimClock(start=START), settings=Settings(build_seconds=30))
    assert state.load_into(again)
    assert again.clock.offset == 5  # the advanced clock is part of the state
    again.settle()
    assert again.instances[inst.serviceid].status == "BUILD"
    again.clock.advance(25)
    again.settle()
    assert again.instances[inst.serviceid].status == "ACTIVE"


def test_the_file_is_replaced_atomically_and_is_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    state = StateFile(path)
    world = World(clock=SimClock(start=START))
    for n in range(3):
        world.add_instance(template=IMAGE, rid=52, location_id=12, srvrname=f"n{n}")
        state.save(world)
        data = json.loads(path.read_text())
        assert len(data["instances"]) == n + 1
    assert [p.name for p in tmp_path.iterdir()] == ["sim.json"]


def test_a_missing_or_empty_file_is_an_empty_account(tmp_path: Path) -> None:
    world = World()
    assert StateFile(tmp_path / "absent.json").load_into(world) is False
    (tmp_path / "empty.json").write_text("")
    assert StateFile(tmp_path / "empty.json").load_into(world) is False
    assert world.instances == {}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something-else"}', "not a Hostwinds simulator state file"),
        (
            '{"format": "fleet-reconciler-hostwinds-simulator", "version": 99}',
            "unsupported state version 99",
        ),
        (
            '{"format": "fleet-reconciler-hostwinds-simulator", "version": 1, "instances": [{}]}',
            "damaged state",
        ),
        ("[1, 2]", "not a Hostwinds simulator state file"),
    ],
)
def test_a_bad_state_file_is_a_clear_error(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SimulatorStateError) as caught:
        SimulatorServer(state_path=path)
    assert fragment in caught.value.message
    assert str(path) in caught.value.message
    assert caught.value.hint


def test_writes_are_debounced_but_never_lost(tmp_path: Path, http: httpx.Client) -> None:
    path = tmp_path / "sim.json"
    with SimulatorServer(state_path=path, api_key=KEY) as sim:
        call = make_call(http, sim)
        for n in range(40):
            call("add_instance", template=IMAGE, rid=52, location_id=12, srvrname=f"n{n}")
        assert sim.app.state is not None
        assert sim.app.state.saves < 40
    assert len(json.loads(path.read_text())["instances"]) == 40


def test_a_session_that_only_reads_leaves_the_file_untouched(
    tmp_path: Path, http: httpx.Client
) -> None:
    # a dry-run of a large account must not rewrite megabytes on its way out (issue 14)
    state = tmp_path / "sim.json"
    with SimulatorServer(state_path=state, api_key=KEY, build_seconds=10) as sim:
        create(make_call(http, sim), "keep-1")
    written = state.read_bytes()
    state.touch()
    mtime = state.stat().st_mtime_ns
    with SimulatorServer(state_path=state, api_key=KEY, build_seconds=10) as sim:
        call = make_call(http, sim)
        assert len(call("get_instances")["success"]) == 1
        call("get_instance", serviceid=call("get_instances")["success"][0]["serviceid"])
    assert state.stat().st_mtime_ns == mtime
    assert state.read_bytes() == written


def test_a_mutation_is_still_written_and_survives_the_stop(
    tmp_path: Path, http: httpx.Client
) -> None:
    state = tmp_path / "sim.json"
    with SimulatorServer(state_path=state, api_key=KEY, build_seconds=10) as sim:
        create(make_call(http, sim), "keep-1")
    with SimulatorServer(
        state_path=state, api_key=KEY, build_seconds=10, persist_interval=3600
    ) as sim:
        call = make_call(http, sim)
        create(call, "keep-2")  # written at once (the first write of the session)
        create(call, "keep-3")  # its trailing write is an hour away: only the stop saves it
        pending = {i["srvrname"] for i in json.loads(state.read_text())["instances"]}
    assert pending == {"keep-1", "keep-2"}
    names = {i["srvrname"] for i in json.loads(state.read_text())["instances"]}
    assert names == {"keep-1", "keep-2", "keep-3"}


def test_a_fresh_account_file_is_created_even_without_a_mutation(tmp_path: Path) -> None:
    state = tmp_path / "new" / "sim.json"
    with SimulatorServer(state_path=state, api_key=KEY):
        pass
    assert json.loads(state.read_text())["instances"] == []
