"""A records published by group commit (``AddressBatch``) against the DNS stand-in: nodes
reaching their DNS step together share updates, each gets the outcome of its own update."""

from __future__ import annotations

import asyncio

import pytest

from providers.dns.rfc2136 import TsigKey
from providers.simulator.standins import StandIns
from reconciler.core.errors import AuthError
from reconciler.engine.contexts import AddressBatch
from tests.provisioning.conftest import ZONE, provisioner_for

pytestmark = pytest.mark.anyio


async def test_addresses_waiting_for_the_lock_go_out_in_one_update(stand_ins: StandIns) -> None:
    p = provisioner_for(stand_ins)
    batch = AddressBatch(asyncio.Lock())
    hosts = {f"n{i}.{ZONE}": f"198.51.100.{10 + i}" for i in range(12)}

    async def send(addresses: dict[str, str]) -> None:
        await p.publish_many(addresses, [])

    before = stand_ins.dns_server.updates
    await asyncio.gather(*(batch.publish(h, ip, send) for h, ip in hosts.items()))
    # the first caller publishes alone, everyone who queued behind it goes in the next one
    assert batch.updates <= 2
    assert stand_ins.dns_server.updates - before == batch.updates
    for host, ip in hosts.items():
        assert stand_ins.dns_server.values(host, "A") == [ip]
    spf = stand_ins.dns_server.values(ZONE, "TXT")[0]
    assert "198.51.100." in spf


async def test_a_refused_update_fails_every_address_it_carried(stand_ins: StandIns) -> None:
    wrong = TsigKey(stand_ins.tsig.name, "hmac-sha256", "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc=")
    p = provisioner_for(stand_ins)
    p.dns = stand_ins.dns(wrong)
    batch = AddressBatch(asyncio.Lock())

    async def send(addresses: dict[str, str]) -> None:
        await p.publish_many(addresses, [])

    outcomes = await asyncio.gather(
        *(batch.publish(f"r{i}.{ZONE}", f"198.51.100.{40 + i}", send) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(o, AuthError) for o in outcomes), outcomes
    assert stand_ins.dns_server.values(f"r0.{ZONE}", "A") == []
    # the batch is empty again: a later publish with the right key goes through alone
    p.dns = stand_ins.dns()
    await batch.publish(f"r9.{ZONE}", "198.51.100.49", send)
    assert stand_ins.dns_server.values(f"r9.{ZONE}", "A") == ["198.51.100.49"]
    assert stand_ins.dns_server.values(f"r0.{ZONE}", "A") == []


async def test_a_cancelled_publisher_leaves_the_others_addresses_to_the_next(
    stand_ins: StandIns,
) -> None:
    p = provisioner_for(stand_ins)
    batch = AddressBatch(asyncio.Lock())
    release = asyncio.Event()
    calls: list[dict[str, str]] = []

    async def send(addresses: dict[str, str]) -> None:
        calls.append(addresses)
        if len(calls) == 1:
            await release.wait()  # the first holder hangs until cancelled
        await p.publish_many(addresses, [])

    first = asyncio.ensure_future(batch.publish(f"c0.{ZONE}", "198.51.100.60", send))
    await asyncio.sleep(0.01)
    others = [
        asyncio.ensure_future(batch.publish(f"c{i}.{ZONE}", f"198.51.100.{60 + i}", send))
        for i in (1, 2)
    ]
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.gather(*others)
    with pytest.raises(asyncio.CancelledError):
        await first
    for i in (1, 2):
        assert stand_ins.dns_server.values(f"c{i}.{ZONE}", "A") == [f"198.51.100.{60 + i}"]
