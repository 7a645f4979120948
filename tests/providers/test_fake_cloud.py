"""FakeCloud's own test hooks (its CloudPort semantics are in test_cloud_contract.py)."""

from __future__ import annotations

import pytest

from reconciler.core.errors import NotFoundError, TransientError
from reconciler.core.fleet import CreateRequest, ServerStatus
from reconciler.core.ports import CloudPort
from tests.fakes import FakeClock, FakeCloud

pytestmark = pytest.mark.anyio

REQUEST = CreateRequest(name="mail-sea-1", location_id=12, rid=52, template="ubuntu-22.04")


def test_it_is_a_cloud_port() -> None:
    port: CloudPort = FakeCloud()  # mypy checks the protocol; this checks it builds
    assert isinstance(port, FakeCloud)


async def test_fail_next_raises_before_anything_happens() -> None:
    cloud = FakeCloud()
    cloud.fail_next("create_server", TransientError("add_instance failed: timed out"))
    with pytest.raises(TransientError):
        await cloud.create_server(REQUEST)
    assert await cloud.find_servers_by_name("mail-sea-1") == []
    await cloud.create_server(REQUEST)  # only the next call failed
    assert len(await cloud.find_servers_by_name("mail-sea-1")) == 1


async def test_fail_next_applied_models_a_mutation_that_happened_but_failed() -> None:
    cloud = FakeCloud()
    cloud.fail_next("add_instance", TransientError("lost answer"), applied=True)
    with pytest.raises(TransientError):
        await cloud.create_server(REQUEST)
    (server,) = await cloud.find_servers_by_name("mail-sea-1")
    assert server.status is ServerStatus.BUILD


async def test_fail_next_on_reads_and_times() -> None:
    cloud = FakeCloud()
    cloud.fail_next("get_instances", TransientError("HTTP 503"), times=2)
    for _ in range(2):
        with pytest.raises(TransientError):
            await cloud.list_servers()
    assert await cloud.list_servers() == []
    with pytest.raises(ValueError, match="unknown action"):
        cloud.fail_next("reboot_the_world", TransientError("x"))


async def test_calls_mirror_the_clients_request_pattern() -> None:
    cloud = FakeCloud()
    await cloud.create_server(REQUEST)
    await cloud.find_servers_by_name("mail-sea-1")
    await cloud.list_servers()
    assert dict(cloud.calls) == {
        "add_instance": 1,
        "get_instance_ids": 1,
        "get_instance": 1,
        "get_instances": 1,
    }
    assert cloud.mutations == 1
    cloud.reset_calls()
    assert dict(cloud.calls) == {}


async def test_builds_follow_the_shared_clock_and_can_fail() -> None:
    clock = FakeClock()
    cloud = FakeCloud(clock=clock, build_seconds=10)
    cloud.fail_builds(1)
    await cloud.create_server(REQUEST)
    await cloud.create_server(CreateRequest("mail-sea-2", 12, 52, "ubuntu-22.04"))
    await clock.sleep(9)
    assert {s.status for s in await cloud.list_servers()} == {ServerStatus.BUILD}
    await clock.sleep(1)
    statuses = {s.name: s.status for s in await cloud.list_servers()}
    assert statuses == {"mail-sea-1": ServerStatus.ERROR, "mail-sea-2": ServerStatus.ACTIVE}


async def test_behind_our_back_helpers() -> None:
    cloud = FakeCloud()
    sid = cloud.add_unmanaged("portal-made", status=ServerStatus.SHUTOFF)
    assert cloud.snapshot()[0].status is ServerStatus.SHUTOFF
    extra = cloud.add_ip(sid)
    assert extra in await cloud.list_ips(sid)
    await cloud.set_rdns(sid, extra, "mx.example.com")
    assert cloud.rdns_of(extra) == "mx.example.com"
    cloud.set_status(sid, ServerStatus.ERROR)
    assert (await cloud.get_server(sid)).status is ServerStatus.ERROR
    cloud.delete_behind_our_back(sid)
    with pytest.raises(NotFoundError, match="A valid serviceid is required"):
        await cloud.get_server(sid)
    await cloud.aclose()
    assert cloud.closed


async def test_a_thousand_servers_fit_and_get_distinct_ips() -> None:
    cloud = FakeCloud(build_seconds=0)
    for n in range(1200):
        cloud.add_unmanaged(f"n-{n}")
    servers = await cloud.list_servers()
    assert len({s.main_ip for s in servers}) == 1200
    assert cloud.calls["get_instances"] == 1
