"""Fault injection switched on and off at run time over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from providers.simulator.faults import NO_FAULTS, FaultInjector, FaultSettings
from providers.simulator.serving import SimulatorServer
from tests.simulator.calling import IMAGE, KEY, Call

ROOT = Path(__file__).resolve().parents[2]


def post(http: httpx.Client, sim: SimulatorServer, action: str, **form: object) -> httpx.Response:
    return http.post(sim.api_url, data={"action": action, "API": KEY, **form})


def set_faults(http: httpx.Client, sim: SimulatorServer, **faults: object) -> dict[str, object]:
    response = http.post(sim.url + "/sim/faults", json=faults)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_no_faults_by_default(http: httpx.Client, sim: SimulatorServer) -> None:
    view = http.get(sim.url + "/sim/faults").json()
    assert view["http_5xx_rate"] == 0
    assert view["rate_limit_rps"] is None
    assert all(post(http, sim, "get_locations").status_code == 200 for _ in range(20))


def test_http_5xx_every_time_then_cleared(http: httpx.Client, sim: SimulatorServer) -> None:
    set_faults(http, sim, http_5xx_rate=1.0)
    response = post(http, sim, "get_locations")
    assert response.status_code == 503
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()
    assert http.delete(sim.url + "/sim/faults").status_code == 200
    assert post(http, sim, "get_locations").status_code == 200


def test_a_share_of_5xx_is_deterministic_for_a_seed(
    http: httpx.Client, sim: SimulatorServer
) -> None:
    def run() -> list[int]:
        set_faults(http, sim, http_5xx_rate=0.5, seed=3)
        return [post(http, sim, "get_locations").status_code for _ in range(40)]

    first = run()
    assert first == run()
    assert 8 <= first.count(503) <= 32
    assert set(first) == {200, 503}


def test_a_5xx_does_not_apply_the_mutation(
    call: Call, http: httpx.Client, sim: SimulatorServer
) -> None:
    set_faults(http, sim, http_5xx_rate=1.0, http_5xx_status=500)
    response = post(http, sim, "add_instance", template=IMAGE, rid=52, location_id=12)
    assert response.status_code == 500
    http.delete(sim.url + "/sim/faults")
    assert call("get_instances")["success"] == []


def test_a_lost_response_applies_the_mutation(
    call: Call, http: httpx.Client, sim: SimulatorServer
) -> None:
    set_faults(http, sim, lost_response_rate=1.0, actions=["add_instance"])
    response = post(http, sim, "add_instance", template=IMAGE, rid=52, location_id=12)
    assert response.status_code == 502
    assert len(call("get_instances")["success"]) == 1  # not in `actions`: no fault


def test_error_in_200(call: Call, http: httpx.Client, sim: SimulatorServer) -> None:
    set_faults(http, sim, error_in_200_rate=1.0)
    response = post(http, sim, "add_instance", template=IMAGE, rid=52, location_id=12)
    assert response.status_code == 200
    assert response.json() == [
        {"result": "error", "action": "Add Instance", "message": "An unexpected error occurred."}
    ]
    http.delete(sim.url + "/sim/faults")
    assert call("get_instances")["success"] == []


def test_malformed_json_with_http_200(http: httpx.Client, sim: SimulatorServer) -> None:
    set_faults(http, sim, malformed_json_rate=1.0)
    response = post(http, sim, "get_locations")
    assert response.status_code == 200
    assert response.text.startswith("<br />")
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


def test_rate_limit_answers_429_above_the_rate(http: httpx.Client, sim: SimulatorServer) -> None:
    set_faults(http, sim, rate_limit_rps=5)
    codes = [post(http, sim, "get_locations").status_code for _ in range(12)]
    assert codes[:5] == [200] * 5
    assert 429 in codes[5:]
    limited = next(
        r for r in (post(http, sim, "get_locations") for _ in range(5)) if r.status_code == 429
    )
    assert limited.headers["retry-after"] == "1"


def test_the_token_bucket_refills_with_time() -> None:
    now = [0.0]
    injector = FaultInjector(FaultSettings(rate_limit_rps=2), monotonic=lambda: now[0])
    assert [injector.decide("x").rate_limited for _ in range(3)] == [False, False, True]
    now[0] += 0.5
    assert injector.decide("x").rate_limited is False
    assert injector.decide("x").rate_limited is True


def test_faults_can_target_some_actions(http: httpx.Client, sim: SimulatorServer) -> None:
    set_faults(http, sim, http_5xx_rate=1.0, actions=["get_instances"])
    assert post(http, sim, "get_instances").status_code == 503
    assert post(http, sim, "get_locations").status_code == 200


def test_latency_delays_each_answer(http: httpx.Client, sim: SimulatorServer) -> None:
    set_faults(http, sim, latency_ms=150)
    started = time.monotonic()
    assert post(http, sim, "get_locations").status_code == 200
    assert time.monotonic() - started >= 0.15


def test_a_hang_times_the_client_out_and_the_server_recovers(
    http: httpx.Client, sim: SimulatorServer
) -> None:
    set_faults(http, sim, hang_rate=1.0, hang_seconds=30)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post(sim.api_url, data={"action": "get_locations", "API": KEY}, timeout=0.2)
    assert time.monotonic() - started < 5
    set_faults(http, sim, hang_rate=1.0, hang_seconds=0.1)
    assert post(http, sim, "get_locations").status_code == 504
    http.delete(sim.url + "/sim/faults")
    assert post(http, sim, "get_locations").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"http_5xx_rate": 2},
        {"latency_ms": -1},
        {"no_such_fault": 1},
        {"rate_limit_rps": 0},
        {"build_seconds": "soon"},
    ],
)
def test_bad_fault_settings_are_refused(
    http: httpx.Client, sim: SimulatorServer, body: object
) -> None:
    response = http.post(sim.url + "/sim/faults", json=body)
    assert response.status_code == 400
    assert response.json()["error"]
    assert http.get(sim.url + "/sim/faults").json()["http_5xx_rate"] == 0


def test_fault_settings_merge(http: httpx.Client, sim: SimulatorServer) -> None:
    set_faults(http, sim, latency_ms=5)
    view = set_faults(http, sim, http_5xx_rate=0.1)
    assert (view["latency_ms"], view["http_5xx_rate"]) == (5, 0.1)


def test_the_default_settings_are_the_models_defaults() -> None:
    # NO_FAULTS is made without validation (no validator built at start-up, issue 14)
    assert FaultSettings() == NO_FAULTS
    assert NO_FAULTS.model_dump() == FaultSettings().model_dump()
    assert FaultInjector().settings == FaultSettings()


def test_serving_builds_no_admin_validator_until_one_is_used() -> None:
    # a fresh process: the models' validators are built on first use (defer_build)
    probe = (
        "from providers.simulator import app, faults\n"
        "from providers.simulator.serving import build_app\n"
        "build_app()\n"
        "models = (app.SeedInstance, app.PatchInstance, app.Reprice, app.ClockAdvance,\n"
        "          faults.FaultSettings, faults.LifecycleUpdate)\n"
        "print(sum(m.__pydantic_complete__ for m in models))\n"
        "faults.FaultSettings.model_validate({'http_5xx_rate': 0.5})\n"
        "print(faults.FaultSettings.__pydantic_complete__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert done.stdout.split() == ["0", "True"]
