"""HostwindsClient against the simulator's injected faults over a real loopback socket.

Backoff sleeps use fake time (the client's ``sleep`` is a FakeClock); only the hang/latency
tests spend real time, bounded by tiny client timeouts. /sim/stats counts what reached the
server, so "a mutation is never repeated" is checked on the server side.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from providers.hostwinds import HostwindsClient
from providers.simulator.serving import SimulatorServer
from reconciler.core.errors import AuthError, NotFoundError, TransientError
from reconciler.core.fleet import CreateRequest, ServerStatus
from tests.fakes.clocks import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(build_seconds=1.0) as server:
        yield server


@pytest.fixture
async def admin(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.url, timeout=10.0) as client:
        await client.delete("/sim/faults")
        await client.post("/sim/stats/reset")
        try:
            yield client
        finally:
            await client.delete("/sim/faults")


@pytest.fixture
async def client(simulator: SimulatorServer) -> AsyncIterator[tuple[HostwindsClient, FakeClock]]:
    clock = FakeClock()
    async with HostwindsClient(
        simulator.api_url,
        "simulator",
        rate_limit=500.0,
        timeout=2.0,
        max_read_retries=2,
        sleep=clock.sleep,
        rng=random.Random(3),
    ) as hw:
        yield hw, clock


async def faults(admin: httpx.AsyncClient, **settings: Any) -> None:
    response = await admin.post("/sim/faults", json=settings)
    assert response.status_code == 200, response.text


async def requests_seen(admin: httpx.AsyncClient) -> dict[str, int]:
    stats = (await admin.get("/sim/stats")).json()
    requests: dict[str, int] = stats["requests"]
    return requests


def create(name: str) -> CreateRequest:
    return CreateRequest(name=name, location_id=12, rid=52, template="ubuntu-22.04")


async def test_list_servers_is_one_request_whatever_the_fleet_size(
    admin: httpx.AsyncClient, client: tuple[HostwindsClient, FakeClock]
) -> None:
    hw, _ = client
    for n in range(25):
        await admin.post("/sim/instances", json={"srvrname": f"bulk-{uuid.uuid4().hex[:6]}-{n}"})
    await admin.post("/sim/stats/reset")
    servers = await hw.list_servers()
    assert len(servers) >= 25
    assert await requests_seen(admin) == {"get_instances": 1}


async def test_5xx_on_reads_is_retried_then_transient(
    admin: httpx.AsyncClient, client: tuple[HostwindsClient, FakeClock]
) -> None:
    hw, clock = client
    await faults(admin, http_5xx_rate=1.0, actions=["get_instances"])
    with pytest.raises(TransientError, match=r"get_instances failed: HTTP 503"):
        await hw.list_servers()
    assert (await requests_seen(admin))["get_instances"] == 3
    assert len(clock.sleeps) == 2


async def test_error_in_200_on_a_mutation_is_transient_and_not_repeated(
    admin: httpx.AsyncClient, client: tuple[HostwindsClient, FakeClock]
) -> None:
    hw, _ = client
    name = f"e200-{uuid.uuid4().hex[:8]}"
    await faults(admin, error_in_200_rate=1.0, actions=["add_instance"])
    with pytest.raises(TransientError, match="add_instance failed: An unexpected error"):
        await hw.create_server(create(name))
    assert (await requests_seen(admin))["add_instance"] == 1
    assert await hw.find_servers_by_name(name) == []  # observing resolves it: not created


async def test_malformed_json_after_a_mutation_is_resolved_by_observing(
    admin: httpx.AsyncClient, client: tuple[HostwindsClient, FakeClock]
) -> None:
    hw, _ = client
    name = f"mal-{uuid.uuid4().hex[:8]}"
    await hw.create_server(create(name))
    (server,) = await hw.find_servers_by_name(name)
    await faults(admin, malformed_json_rate=1.0, actions=["terminate"])
    with pytest.raises(TransientError, match="not JSON") as caught:
        await hw.terminate(server.service_id)
    assert "outcome is unknown" in str(caught.value)
    assert (await requests_seen(admin))["terminate"] == 1
    with pytest.raises(NotFoundError):  # it did happen
        await hw.get_server(server.service_id)


async def test_malformed_json_on_reads_is_retried(
    admin: httpx.AsyncClient, client: tuple[HostwindsClient, FakeClock]
) -> None:
    hw, _ = client
    await faults(admin, malformed_json_rate=1.0, actions=["get_price_list"])
    with pytest.raises(TransientError, match="not JSON"):
        await hw.price_list()
    assert (await requests_seen(admin))["get_price_list"] == 3


async def test_a_lost_response_leaves_a_server_to_find_by_name(
    admin: httpx.AsyncClient, client: tuple[HostwindsClient, FakeClock]
) -> None:
    hw, _ = client
    name = f"lost-{uuid.uuid4().hex[:8]}"
    await faults(admin, lost_response_rate=1.0, actions=["add_instance"])
    with pytest.raises(TransientError, match="HTTP 502"):
        await hw.create_server(create(name))
    assert (await requests_seen(admin))["add_instance"] == 1
    (found,) = await hw.find_servers_by_name(name)
    assert found.status is ServerStatus.BUILD


async def test_hangs_time_out_fast(simulator: SimulatorServer, admin: httpx.AsyncClient) -> None:
    await faults(admin, hang_rate=1.0, hang_seconds=5.0, actions=["get_instances", "terminate"])
    clock = FakeClock()
    async with HostwindsClient(
        simulator.api_url,
        "simulator",
        rate_limit=500.0,
        timeout=0.2,
        max_read_retries=1,
        sleep=clock.sleep,
    ) as hw:
        with pytest.raises(TransientError, match="timed out"):
            await hw.list_servers()
        with pytest.raises(TransientError, match="outcome is unknown"):
            await hw.terminate(1)
    seen = await requests_seen(admin)
    assert seen["get_instances"] == 2
    assert seen["terminate"] == 1


async def test_429_is_retried_after_the_servers_delay(
    admin: httpx.AsyncClient, client: tuple[HostwindsClient, FakeClock]
) -> None:
    hw, clock = client
    await faults(admin, rate_limit_rps=0.001, actions=["get_locations"])
    with pytest.raises(TransientError, match="HTTP 429"):
        await hw.locations()
    assert clock.sleeps
    # two retries, each at least Retry-After (1 s) later: the retry's own sleep, and the
    # bucket slowed by the 429 (issue 9) that hands out no token before Retry-After
    assert max(clock.sleeps) >= 1.0
    assert sum(clock.sleeps) >= 2.0
    assert (await requests_seen(admin))["get_locations"] == 3


async def test_a_wrong_key_is_an_auth_error_with_the_allow_list_hint(
    simulator: SimulatorServer, admin: httpx.AsyncClient
) -> None:
    async with HostwindsClient(simulator.api_url, "wrong-key", rate_limit=500.0) as hw:
        with pytest.raises(AuthError) as caught:
            await hw.list_servers()
    assert "Not Authorized!" in str(caught.value)
    assert "IPv4" in (caught.value.hint or "")
    assert (await requests_seen(admin))["get_instances"] == 1


async def test_a_refused_connection_is_transient(unused_port: int) -> None:
    clock = FakeClock()
    async with HostwindsClient(
        f"http://127.0.0.1:{unused_port}/cloud/api.php",
        "simulator",
        max_read_retries=1,
        sleep=clock.sleep,
    ) as hw:
        with pytest.raises(TransientError, match="did not reach the server"):
            await hw.create_server(create("nowhere"))
    assert hw.calls["add_instance"] == 2  # provably not sent: safe to try again


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
