"""ONE contract suite for ``CloudPort``, run against every implementation:

- ``fake``: tests/fakes/cloud.py ``FakeCloud`` (in memory);
- ``simulator``: ``HostwindsClient`` talking to the Hostwinds simulator over a real loopback socket;
- ``live``: ``HostwindsClient`` against the real API, read-only tests only, when
  ``HOSTWINDS_LIVE=1`` and ``HOSTWINDS_API_KEY`` are set (marked ``live``; skipped otherwise).

Tests that mutate use ``mutable_cloud`` (fake + simulator); read-only ones use ``cloud``
(all three).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import httpx
import pytest

from providers.hostwinds import DEFAULT_ENDPOINT, HostwindsClient
from providers.simulator.serving import SimulatorServer
from reconciler.core.errors import (
    ConflictError,
    NotFoundError,
    TerminalError,
    TransientError,
)
from reconciler.core.fleet import CreateRequest, ObservedServer, ServerStatus
from reconciler.core.ports import CloudPort
from tests.fakes.cloud import FakeCloud

pytestmark = pytest.mark.anyio

TEMPLATE = "ubuntu-22.04"
SMALL_RID, BIG_RID = 52, 53
SEATTLE = 12
BUILD_SECONDS = 2.0


class Harness(Protocol):
    """What a contract test needs beyond the port: moving time and changing the world
    behind the port's back."""

    @property
    def port(self) -> CloudPort: ...

    @property
    def mutable(self) -> bool: ...

    async def advance(self, seconds: float) -> None: ...

    async def add_unmanaged(self, name: str, *, locked: bool = False) -> int: ...

    async def delete_behind_our_back(self, service_id: int) -> None: ...

    async def fail_next_builds(self) -> None: ...

    async def restore_builds(self) -> None: ...

    async def stop(self, service_id: int) -> None: ...


@dataclass
class FakeHarness:
    port: FakeCloud
    mutable: bool = True

    async def advance(self, seconds: float) -> None:
        self.port.advance(seconds)

    async def add_unmanaged(self, name: str, *, locked: bool = False) -> int:
        return self.port.add_unmanaged(name, locked=locked)

    async def delete_behind_our_back(self, service_id: int) -> None:
        self.port.delete_behind_our_back(service_id)

    async def fail_next_builds(self) -> None:
        self.port.fail_builds(1000)

    async def restore_builds(self) -> None:
        self.port.fail_builds(-1000)

    async def stop(self, service_id: int) -> None:
        self.port.set_status(service_id, ServerStatus.SHUTOFF)


@dataclass
class SimulatorHarness:
    port: HostwindsClient
    admin: httpx.AsyncClient
    mutable: bool = True

    async def _admin(self, method: str, path: str, json: object = None) -> httpx.Response:
        response = await self.admin.request(method, path, json=json)
        response.raise_for_status()
        return response

    async def advance(self, seconds: float) -> None:
        await self._admin("POST", "/sim/clock/advance", {"seconds": seconds})

    async def add_unmanaged(self, name: str, *, locked: bool = False) -> int:
        response = await self._admin("POST", "/sim/instances", {"srvrname": name, "locked": locked})
        return int(response.json()["serviceid"])

    async def delete_behind_our_back(self, service_id: int) -> None:
        await self._admin("DELETE", f"/sim/instances/{service_id}")

    async def fail_next_builds(self) -> None:
        await self._admin("POST", "/sim/faults", {"build_failure_rate": 1.0})

    async def restore_builds(self) -> None:
        await self._admin("POST", "/sim/faults", {"build_failure_rate": 0.0})

    async def stop(self, service_id: int) -> None:
        # the API's own `shutdown` (an action the port does not need)
        await self.port._call("shutdown", {"serviceid": service_id})


@dataclass
class LiveHarness:
    port: HostwindsClient
    mutable: bool = False

    async def advance(self, seconds: float) -> None:
        raise AssertionError("the live API is read-only in tests")

    async def add_unmanaged(self, name: str, *, locked: bool = False) -> int:
        raise AssertionError("the live API is read-only in tests")

    async def delete_behind_our_back(self, service_id: int) -> None:
        raise AssertionError("the live API is read-only in tests")

    async def fail_next_builds(self) -> None:
        raise AssertionError("the live API is read-only in tests")

    async def restore_builds(self) -> None:
        raise AssertionError("the live API is read-only in tests")

    async def stop(self, service_id: int) -> None:
        raise AssertionError("the live API is read-only in tests")


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(build_seconds=BUILD_SECONDS, resize_seconds=2.0) as server:
        yield server


async def _harness(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if kind == "fake":
        fake = FakeCloud(build_seconds=BUILD_SECONDS)
        yield FakeHarness(fake)
        await fake.aclose()
    elif kind == "simulator":
        server: SimulatorServer = request.getfixturevalue("simulator")
        client = HostwindsClient(server.api_url, "simulator", rate_limit=500.0, timeout=10.0)
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as admin, client:
            harness = SimulatorHarness(client, admin)
            try:
                yield harness
            finally:
                await admin.delete("/sim/faults")
    else:
        key = os.environ.get("HOSTWINDS_API_KEY", "")
        if os.environ.get("HOSTWINDS_LIVE") != "1" or not key:
            pytest.skip("set HOSTWINDS_LIVE=1 and HOSTWINDS_API_KEY to run against the real API")
        endpoint = os.environ.get("HOSTWINDS_API_URL") or DEFAULT_ENDPOINT
        async with HostwindsClient(endpoint, key, rate_limit=1.0) as client:
            yield LiveHarness(client)


@pytest.fixture(params=["fake", "simulator", pytest.param("live", marks=pytest.mark.live)])
async def cloud(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Every implementation, for read-only tests."""
    async for harness in _harness(request.param, request):
        yield harness


@pytest.fixture(params=["fake", "simulator"])
async def mutable_cloud(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Implementations we may change, for tests that create, resize and destroy."""
    async for harness in _harness(request.param, request):
        yield harness


def unique(prefix: str = "ct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_request(name: str, *, rid: int = SMALL_RID, location_id: int = SEATTLE) -> CreateRequest:
    return CreateRequest(
        name=name, location_id=location_id, rid=rid, template=TEMPLATE, ssh_keys=("ops",)
    )


async def create_and_find(harness: Harness, name: str) -> ObservedServer:
    await harness.port.create_server(create_request(name))
    (server,) = await harness.port.find_servers_by_name(name)
    return server


async def create_active(harness: Harness, name: str) -> ObservedServer:
    server = await create_and_find(harness, name)
    await harness.advance(BUILD_SECONDS + 1)
    server = await harness.port.get_server(server.service_id)
    assert server.status is ServerStatus.ACTIVE
    return server


# --- read-only (every implementation, the real API included) ------------------------------------


async def test_price_list_has_decimal_prices_and_unique_rids(cloud: Harness) -> None:
    plans = await cloud.port.price_list()
    assert plans
    assert len({p.rid for p in plans}) == len(plans)
    for plan in plans:
        assert isinstance(plan.monthly, Decimal)
        assert plan.monthly >= 0
        assert plan.rid > 0
        assert plan.name


async def test_locations_are_listed_with_ids(cloud: Harness) -> None:
    locations = await cloud.port.locations()
    assert locations
    assert len({loc.location_id for loc in locations}) == len(locations)
    assert all(loc.name for loc in locations)


async def test_list_servers_returns_observed_servers(cloud: Harness) -> None:
    servers = await cloud.port.list_servers()
    assert all(isinstance(s, ObservedServer) for s in servers)
    assert all(isinstance(s.status, ServerStatus) for s in servers)
    assert len({s.service_id for s in servers}) == len(servers)


async def test_unknown_serviceid_is_not_found(cloud: Harness) -> None:
    with pytest.raises(NotFoundError):
        await cloud.port.get_server(1)
    with pytest.raises(NotFoundError):
        await cloud.port.list_ips(1)


async def test_an_unknown_name_finds_nothing(cloud: Harness) -> None:
    assert await cloud.port.find_servers_by_name(unique("nobody")) == []


# --- life cycle (fake and simulator) ------------------------------------------------------------


async def test_create_builds_then_becomes_active_and_is_found_by_name(
    mutable_cloud: Harness,
) -> None:
    port = mutable_cloud.port
    name = unique()
    server = await create_and_find(mutable_cloud, name)
    assert server.name == name
    assert server.status.is_transitional
    assert server.location_id == SEATTLE
    assert server.plan_rid == SMALL_RID
    assert server.service_id in {s.service_id for s in await port.list_servers()}
    await mutable_cloud.advance(BUILD_SECONDS + 1)
    server = await port.get_server(server.service_id)
    assert server.status is ServerStatus.ACTIVE
    assert server.main_ip
    assert server.main_ip in await port.list_ips(server.service_id)
    plan = {p.rid: p for p in await port.price_list()}[SMALL_RID]
    assert (server.vcpu, server.ram_mb, server.disk_gb) == (
        plan.vcpu,
        int(plan.ram_gb * 1024),
        plan.disk_gb,
    )


async def test_find_by_name_is_exact(mutable_cloud: Harness) -> None:
    base = unique()
    for name in (base, base + "0", base + "-1"):
        await mutable_cloud.port.create_server(create_request(name))
    found = await mutable_cloud.port.find_servers_by_name(base)
    assert [s.name for s in found] == [base]


async def test_same_name_twice_gives_two_servers(mutable_cloud: Harness) -> None:
    name = unique()
    await mutable_cloud.port.create_server(create_request(name))
    await mutable_cloud.port.create_server(create_request(name))
    found = await mutable_cloud.port.find_servers_by_name(name)
    assert len(found) == 2
    assert len({s.service_id for s in found}) == 2


async def test_a_failed_build_ends_in_error(mutable_cloud: Harness) -> None:
    await mutable_cloud.fail_next_builds()
    try:
        server = await create_and_find(mutable_cloud, unique())
    finally:
        await mutable_cloud.restore_builds()
    await mutable_cloud.advance(BUILD_SECONDS + 1)
    assert (await mutable_cloud.port.get_server(server.service_id)).status is ServerStatus.ERROR


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (create_request("x", location_id=999), "Location Id is invalid."),
        (create_request("x", rid=999_999), "rid"),
    ],
)
async def test_a_refused_create_is_terminal_and_creates_nothing(
    mutable_cloud: Harness, request_: CreateRequest, message: str
) -> None:
    name = unique()
    bad = CreateRequest(
        name=name,
        location_id=request_.location_id,
        rid=request_.rid,
        template=TEMPLATE,
    )
    with pytest.raises(TerminalError, match=message) as caught:
        await mutable_cloud.port.create_server(bad)
    assert not isinstance(caught.value, TransientError)
    assert str(caught.value).startswith("add_instance failed: ")
    assert await mutable_cloud.port.find_servers_by_name(name) == []


async def test_terminate_removes_the_server(mutable_cloud: Harness) -> None:
    port = mutable_cloud.port
    server = await create_active(mutable_cloud, unique())
    await port.terminate(server.service_id)
    assert server.service_id not in {s.service_id for s in await port.list_servers()}
    with pytest.raises(NotFoundError):
        await port.get_server(server.service_id)
    with pytest.raises(NotFoundError):
        await port.terminate(server.service_id)
    assert await port.find_servers_by_name(server.name) == []


async def test_resize_confirm_applies_the_new_plan(mutable_cloud: Harness) -> None:
    port = mutable_cloud.port
    server = await create_active(mutable_cloud, unique())
    sid = server.service_id
    await port.upgrade_instance(sid, BIG_RID)
    with pytest.raises(ConflictError):
        await port.upgrade_instance(sid, BIG_RID)  # one pending order only
    with pytest.raises(ConflictError):
        await port.confirm_upgrade(sid)  # not RESIZED yet
    await port.upgrade_server(sid)
    assert (await port.get_server(sid)).status.is_transitional
    await mutable_cloud.advance(3)
    resized = await port.get_server(sid)
    assert resized.status is ServerStatus.RESIZED
    assert resized.plan_rid == BIG_RID
    await port.confirm_upgrade(sid)
    done = await port.get_server(sid)
    assert done.status is ServerStatus.ACTIVE
    assert done.plan_rid == BIG_RID


async def test_resize_revert_restores_the_old_plan(mutable_cloud: Harness) -> None:
    port = mutable_cloud.port
    sid = (await create_active(mutable_cloud, unique())).service_id
    await port.upgrade_instance(sid, BIG_RID)
    await port.upgrade_server(sid)
    await mutable_cloud.advance(3)
    await port.revert_upgrade(sid)
    reverted = await port.get_server(sid)
    assert reverted.status is ServerStatus.ACTIVE
    assert reverted.plan_rid == SMALL_RID


async def test_resize_steps_out_of_order_conflict(mutable_cloud: Harness) -> None:
    port = mutable_cloud.port
    sid = (await create_active(mutable_cloud, unique())).service_id
    with pytest.raises(ConflictError):
        await port.upgrade_server(sid)  # no order
    with pytest.raises(ConflictError):
        await port.revert_upgrade(sid)
    with pytest.raises(NotFoundError):
        await port.upgrade_instance(1, BIG_RID)


async def test_set_rdns_on_the_servers_own_ip_only(mutable_cloud: Harness) -> None:
    port = mutable_cloud.port
    server = await create_active(mutable_cloud, unique())
    assert server.main_ip is not None
    await port.set_rdns(server.service_id, server.main_ip, "mx1.example.com")
    with pytest.raises(TerminalError) as caught:
        await port.set_rdns(server.service_id, "192.0.2.250", "mx1.example.com")
    assert not isinstance(caught.value, NotFoundError | ConflictError | TransientError)
    with pytest.raises(NotFoundError):
        await port.set_rdns(1, server.main_ip, "mx1.example.com")


async def test_locked_servers_refuse_changes(mutable_cloud: Harness) -> None:
    port = mutable_cloud.port
    name = unique("portal")
    sid = await mutable_cloud.add_unmanaged(name, locked=True)
    (server,) = await port.find_servers_by_name(name)
    assert server.service_id == sid
    assert server.locked
    with pytest.raises(ConflictError):
        await port.terminate(sid)
    with pytest.raises(ConflictError):
        await port.upgrade_instance(sid, BIG_RID)
    assert (await port.get_server(sid)).status is ServerStatus.ACTIVE


async def test_boot_starts_a_stopped_server(mutable_cloud: Harness) -> None:
    """``boot`` ([DOC S1]): a SHUTOFF server is ACTIVE again; a locked one refuses."""
    port = mutable_cloud.port
    sid = await mutable_cloud.add_unmanaged(unique("portal"))
    await mutable_cloud.stop(sid)
    assert (await port.get_server(sid)).status is ServerStatus.SHUTOFF
    await port.boot_server(sid)
    assert (await port.get_server(sid)).status is ServerStatus.ACTIVE
    locked = await mutable_cloud.add_unmanaged(unique("portal"), locked=True)
    with pytest.raises(ConflictError):
        await port.boot_server(locked)
    with pytest.raises(NotFoundError):
        await port.boot_server(1)


async def test_changes_behind_our_back_are_observed(mutable_cloud: Harness) -> None:
    port = mutable_cloud.port
    name = unique("portal")
    sid = await mutable_cloud.add_unmanaged(name)
    assert sid in {s.service_id for s in await port.list_servers()}
    await mutable_cloud.delete_behind_our_back(sid)
    assert sid not in {s.service_id for s in await port.list_servers()}
    assert await port.find_servers_by_name(name) == []
    with pytest.raises(NotFoundError):
        await port.get_server(sid)
