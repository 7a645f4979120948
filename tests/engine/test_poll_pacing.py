"""Polls yield to mutations at the rate limiter (issue 12).

The watcher's list rounds and a rate-limited ``HostwindsClient`` on virtual time, against a
small scripted account (``ScriptedApi``): servers appear at ``add_instance`` and turn ACTIVE
``build`` seconds later. With creates queued for tokens, a list round waits until they have
gone (bounded by the client's ``defer_limit``), so the requests for N nodes come close to the
floor the rate limit sets."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from providers.hostwinds import HostwindsClient
from reconciler.core.fleet import CreateRequest, ObservedServer
from reconciler.engine.pricing import PriceListCache
from reconciler.engine.reconciling import Reconciler
from reconciler.engine.watching import ServerWatcher
from specs.loading import spec_hash
from tests.engine.conftest import Loaded, World, make_spec
from tests.fakes.clocks import VirtualClock
from tests.fakes.wires import Reply, ScriptedApi, SentRequest, command_ok

URL = "https://api.example.test/cloud/api.php"
KEY = "k3y-under-test-0123456789"


@dataclass
class Account:
    """add_instance adds a server (BUILD, ACTIVE ``build`` s later); the reads answer from
    them; every request is logged with its virtual time."""

    clock: VirtualClock
    build: float = 0.0
    servers: dict[int, tuple[str, float]] = field(default_factory=dict)
    log: list[tuple[float, str]] = field(default_factory=list)

    def reply(self, sent: SentRequest) -> Reply:
        now = self.clock.monotonic()
        self.log.append((now, sent.action))
        if sent.action == "add_instance":
            sid = 1000 + len(self.servers)
            self.servers[sid] = (sent.field("srvrname") or "", now)
            return Reply(command_ok())
        if sent.action == "get_instances":
            return Reply({"success": [self._instance(sid) for sid in sorted(self.servers)]})
        if sent.action == "get_instance_ids":
            search = sent.field("search") or ""
            ids = [
                {"id": sid, "srvrname": name}
                for sid, (name, _created) in sorted(self.servers.items())
                if search in name
            ]
            return Reply({"success": ids})
        if sent.action == "get_instance":
            return Reply({"success": self._instance(int(sent.field("serviceid") or 0))})
        return Reply(command_ok())

    def _instance(self, sid: int) -> dict[str, Any]:
        name, created = self.servers[sid]
        active = self.clock.monotonic() >= created + self.build
        return {
            "serviceid": sid,
            "srvrname": name,
            "location_id": 12,
            "status": "ACTIVE" if active else "BUILD",
            "main_ip": f"198.51.100.{sid % 250 + 2}" if active else None,
            "product_id": 52,
        }

    def times(self, action: str) -> list[float]:
        return [t for t, a in self.log if a == action]


def world(
    *, rate: float, burst: int, build: float = 0.0, defer_limit: float | None = None
) -> tuple[VirtualClock, Account, HostwindsClient]:
    clock = VirtualClock()
    account = Account(clock, build)
    options = {} if defer_limit is None else {"defer_limit": defer_limit}
    client = HostwindsClient(
        URL,
        KEY,
        rate_limit=rate,
        burst=burst,
        transport=ScriptedApi(fallback=account.reply).transport,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        rng=random.Random(7),
        **options,
    )
    return clock, account, client


def request(name: str) -> CreateRequest:
    return CreateRequest(name=name, location_id=12, rid=52, template="ubuntu-24", ssh_keys=())


async def _two_waiters(watcher: ServerWatcher, names: list[str]) -> list[ObservedServer | None]:
    within = timedelta(seconds=60)
    return list(await asyncio.gather(*(watcher.wait_for_name(n, within=within) for n in names)))


def test_queued_creates_get_the_tokens_before_a_list_round() -> None:
    clock, account, client = world(rate=10.0, burst=1)
    watcher = ServerWatcher(client, clock, interval=0.05)
    # two at a time (``reconcile.concurrency``): the creates keep arriving while lists wait
    slots = asyncio.Semaphore(2)

    async def create(name: str) -> None:
        async with slots:
            await client.create_server(request(name))

    async def main() -> list[ObservedServer | None]:
        creates = [asyncio.ensure_future(create(f"n{i}")) for i in range(10)]
        await asyncio.sleep(0)
        found = await _two_waiters(watcher, ["n0", "n9"])
        await asyncio.gather(*creates)
        await client.aclose()
        return found

    found = asyncio.run(clock.run(main()))
    assert [s.name if s else None for s in found] == ["n0", "n9"]
    creates = account.times("add_instance")
    lists = account.times("get_instances")
    assert len(creates) == 10
    # all ten creates left at the rate, none pushed back by a list round
    assert creates == pytest.approx([i / 10 for i in range(10)])
    # the first list went out after the last create: one round served both waiters
    assert len(lists) == 1
    assert lists[0] > creates[-1]


def test_a_list_round_still_goes_out_within_the_bound() -> None:
    clock, account, client = world(rate=10.0, burst=1, defer_limit=0.5)
    watcher = ServerWatcher(client, clock, interval=0.05)
    slots = asyncio.Semaphore(4)

    async def create(name: str) -> None:
        async with slots:
            await client.create_server(request(name))

    async def main() -> None:
        creates = [asyncio.ensure_future(create(f"n{i}")) for i in range(40)]
        await asyncio.sleep(0)
        # waiting for the last name: list rounds while 4 s of creates keep the queue full
        await _two_waiters(watcher, ["n38", "n39"])
        await asyncio.gather(*creates)
        await client.aclose()

    asyncio.run(clock.run(main()))
    creates = account.times("add_instance")
    lists = account.times("get_instances")
    assert len(creates) == 40
    assert creates[-1] < 4.0 + 0.5  # the creates still go out at about the rate
    # the watch is not starved: rounds go out while creates queue, each within the bound
    # (then it queues behind the creates already reserved, at most the 4 in flight and one
    # more, and the waiters pause one interval between rounds)
    during = [t for t in lists if t < creates[-1]]
    assert len(during) >= 3
    gaps = [b - a for a, b in zip([0.0, *lists], lists, strict=False)]
    assert max(gaps) <= 0.5 + 5 / 10 + 0.05 + 1e-6


def test_requests_for_n_nodes_come_close_to_the_floor() -> None:
    """N nodes: create, find the name, wait for ACTIVE, set_rdns (the engine's API path of a
    provisioning run, 8 calls at once as ``reconcile.concurrency``)."""
    n, rate, burst, build = 60, 20.0, 20, 2.0
    clock, account, client = world(rate=rate, burst=burst, build=build)
    watcher = ServerWatcher(client, clock, interval=0.05)
    slots = asyncio.Semaphore(8)
    within = timedelta(seconds=60)

    async def node(name: str) -> None:
        async with slots:
            await client.create_server(request(name))
        server = await watcher.wait_for_name(name, within=within)
        assert server is not None
        ready = await watcher.wait_for(
            server.service_id, lambda s: s.status.is_ready, within=within, what="ACTIVE"
        )
        async with slots:
            await client.set_rdns(ready.service_id, ready.main_ip or "", f"{name}.example.net")

    async def main() -> None:
        await asyncio.gather(*(node(f"n{i}") for i in range(n)))
        await client.aclose()

    asyncio.run(clock.run(main()))
    floor = max((2 * n - burst) / rate, (n - burst) / rate + build)
    last = account.times("set_rdns")[-1]
    lists = account.times("get_instances")
    assert len(account.times("add_instance")) == n
    assert len(account.times("set_rdns")) == n
    # every list round still costs a token the mutations could use (the floor counts none),
    # but only a handful go out: no round while creates or set_rdns wait for a token. (With
    # the list rounds queued among them: 10 rounds, 133 requests, the last set_rdns at 5.65 s;
    # now 6 rounds, 128 requests, 5.4 s.)
    assert len(lists) <= 8, lists
    assert len(account.log) <= 2 * n + 8
    assert last <= floor * 1.1, (last, floor, lists)


def test_quiet_rounds_back_off_and_a_change_is_still_seen_soon() -> None:
    """Three servers build for 5 s, two waiters poll every 0.05 s: rounds that find the account
    unchanged double the gap (up to 0.2 s here), so the wait costs a quarter of the tokens,
    and ACTIVE is seen at most one longest gap (plus a token) late."""
    clock, account, client = world(rate=20.0, burst=20, build=5.0)
    watcher = ServerWatcher(client, clock, interval=0.05)
    within = timedelta(seconds=60)

    async def main() -> list[float]:
        for i in range(3):
            await client.create_server(request(f"n{i}"))
        seen: list[float] = []

        async def wait(sid: int) -> None:
            await watcher.wait_for(sid, lambda s: s.status.is_ready, within=within, what="ACTIVE")
            seen.append(clock.monotonic())

        await asyncio.gather(*(wait(sid) for sid in sorted(account.servers)))
        await client.aclose()
        return seen

    seen = asyncio.run(clock.run(main()))
    lists = account.times("get_instances")
    # polling every 0.05 s would be 100 rounds in the 5 s build
    assert len(lists) <= 5.0 / 0.2 + 4, lists
    assert max(seen) <= 5.0 + 0.2 + 0.05 + 1e-6


def test_a_run_with_creates_reads_the_price_list_once(fake_world: World) -> None:
    """The offers check uses the price list the run's observation read through the pricing
    cache: every read before the creates is a token they wait for."""
    spec = make_spec({"seattle": 2})
    reconciler = Reconciler(
        Loaded(spec, spec_hash(spec)),
        fake_world.cloud,
        fake_world.store,
        fake_world.clock,
        poll_interval=5.0,
        prices=PriceListCache(),
    )
    _plan, report = asyncio.run(reconciler.reconcile_once(dry_run=False))
    assert report is not None
    assert len(report.done) == 2
    assert fake_world.cloud.calls["get_price_list"] == 1
    assert fake_world.cloud.calls["get_locations"] == 1
