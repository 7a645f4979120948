"""Admin endpoints for engine tests: seeding, changing and deleting servers behind our back."""

from __future__ import annotations

import httpx
import pytest

from providers.simulator.serving import SimulatorServer
from tests.simulator.calling import Call, create


def test_seed_an_unmanaged_server(call: Call, http: httpx.Client, sim: SimulatorServer) -> None:
    response = http.post(
        sim.url + "/sim/instances", json={"srvrname": "legacy-box", "rid": 53, "locked": True}
    )
    assert response.status_code == 201
    seeded = response.json()
    assert (seeded["srvrname"], seeded["product_id"], seeded["locked"]) == ("legacy-box", 53, 1)
    assert seeded["status"] == "ACTIVE"
    (listed,) = call("get_instances")["success"]
    assert listed["serviceid"] == seeded["serviceid"]
    assert "locked" in call("terminate", serviceid=seeded["serviceid"])[0]["message"].lower()
    assert http.get(sim.url + "/sim/instances").json()[0]["serviceid"] == seeded["serviceid"]


def test_seed_with_a_chosen_ip_and_status(
    call: Call, http: httpx.Client, sim: SimulatorServer
) -> None:
    body = {"srvrname": "b", "status": "build", "main_ip": "198.51.100.200", "location_id": 14}
    seeded = http.post(sim.url + "/sim/instances", json=body).json()
    assert (seeded["status"], seeded["main_ip"], seeded["location_id"]) == (
        "BUILD",
        "198.51.100.200",
        14,
    )
    sim.clock.advance(10)
    assert call("get_instance", serviceid=seeded["serviceid"])["success"]["status"] == "ACTIVE"
    again = http.post(
        sim.url + "/sim/instances", json={"srvrname": "c", "main_ip": "198.51.100.200"}
    )
    assert again.status_code == 400
    assert "already assigned" in again.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"srvrname": "x", "rid": 999},
        {"srvrname": "x", "status": "RESIZE"},
        {"srvrname": "x", "z": 1},
    ],
)
def test_bad_seeds_are_refused(http: httpx.Client, sim: SimulatorServer, body: object) -> None:
    response = http.post(sim.url + "/sim/instances", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


def test_patch_and_delete_behind_our_back(
    call: Call, http: httpx.Client, sim: SimulatorServer
) -> None:
    serviceid = create(call, "victim-1")
    sim.clock.advance(10)
    patched = http.patch(
        f"{sim.url}/sim/instances/{serviceid}", json={"status": "ERROR", "srvrname": "renamed"}
    ).json()
    assert (patched["status"], patched["srvrname"]) == ("ERROR", "renamed")
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "ERROR"
    assert (
        http.patch(f"{sim.url}/sim/instances/{serviceid}", json={"status": "X"}).status_code == 400
    )
    assert http.delete(f"{sim.url}/sim/instances/{serviceid}").status_code == 204
    assert http.delete(f"{sim.url}/sim/instances/{serviceid}").status_code == 404
    assert http.get(f"{sim.url}/sim/instances/{serviceid}").status_code == 404
    assert call("get_instances")["success"] == []


def test_reset_empties_the_account(call: Call, http: httpx.Client, sim: SimulatorServer) -> None:
    create(call, "gone-1")
    http.post(sim.url + "/sim/faults", json={"latency_ms": 1})
    stats = http.post(sim.url + "/sim/reset").json()
    assert (stats["total"], stats["instances"]) == (0, 0)
    assert http.get(sim.url + "/sim/faults").json()["latency_ms"] == 0
    assert create(call, "again-1") == 1234567  # ids start over
