"""GET /sim/stats counts requests per action; it can be reset."""

from __future__ import annotations

import httpx

from providers.simulator.serving import SimulatorServer
from tests.simulator.calling import IMAGE, Call, create


def test_stats_count_requests_mutations_and_statuses(
    call: Call, http: httpx.Client, sim: SimulatorServer
) -> None:
    first = create(call, "stats-1")
    create(call, "stats-2")
    call("get_instances")
    call("get_instances")
    call("no_such_action")
    call("get_instances", key="wrong")
    sim.clock.advance(10)
    call("terminate", serviceid=first)
    stats = http.get(sim.url + "/sim/stats").json()
    assert stats["requests"] == {
        "add_instance": 2,
        "get_instance_ids": 2,
        "get_instances": 3,
        "no_such_action": 1,
        "terminate": 1,
    }
    assert stats["total"] == 9
    assert stats["mutations"] == 3
    assert stats["errors"] == 2
    assert stats["instances_by_status"] == {"ACTIVE": 1}
    # servers made per name: the terminated one still counts (a bound on creates per name)
    assert stats["created"] == {"stats-1": 1, "stats-2": 1}
    assert stats["since"]


def test_created_counts_each_server_made_per_name(
    call: Call, http: httpx.Client, sim: SimulatorServer
) -> None:
    for _ in range(2):
        call("add_instance", template=IMAGE, rid=52, location_id=12, srvrname="twice")
    call("add_instance", template="nope", rid=52, location_id=12, srvrname="refused")
    stats = http.get(sim.url + "/sim/stats").json()
    assert stats["created"] == {"twice": 2}  # a refused create made nothing
    assert http.post(sim.url + "/sim/stats/reset").json()["created"] == {}


def test_admin_calls_are_not_counted_and_reset_zeroes(
    call: Call, http: httpx.Client, sim: SimulatorServer
) -> None:
    call("get_locations")
    http.get(sim.url + "/sim/faults")
    assert http.get(sim.url + "/sim/stats").json()["total"] == 1
    reset = http.post(sim.url + "/sim/stats/reset").json()
    assert (reset["total"], reset["requests"]) == (0, {})
    call("get_locations")
    assert http.delete(sim.url + "/sim/stats").json()["total"] == 0


def test_injected_faults_are_counted(call: Call, http: httpx.Client, sim: SimulatorServer) -> None:
    http.post(sim.url + "/sim/faults", json={"http_5xx_rate": 1.0})
    http.post(sim.api_url, data={"action": "get_instances"})
    stats = http.get(sim.url + "/sim/stats").json()
    assert stats["faults"] == {"http_5xx": 1}
    assert stats["requests"] == {"get_instances": 1}
