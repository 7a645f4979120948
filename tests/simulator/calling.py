"""Calling the simulator the way the real client does (form-encoded POSTs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from providers.simulator.serving import SimulatorServer

IMAGE = "b1e32484-ea0d-4875-921f-2d01fd7b4341"
KEY = "test-key-0123"

Call = Callable[..., Any]


def make_call(http: httpx.Client, sim: SimulatorServer) -> Call:
    def call(action: str, /, *, key: str = KEY, **form: Any) -> Any:
        response = http.post(sim.api_url, data={"action": action, "API": key, **form})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return response.json()

    return call


def create(call: Call, name: str, *, rid: int = 52, location_id: int = 12) -> int:
    """add_instance, then find the new serviceid by name, as the real client must."""
    body = call("add_instance", template=IMAGE, rid=rid, location_id=location_id, srvrname=name)
    assert body[1]["message"] == "Server is being Created!"
    found = call("get_instance_ids", search=name)["success"]
    matches = [item["id"] for item in found if item["srvrname"] == name]
    assert len(matches) == 1
    return int(matches[0])
