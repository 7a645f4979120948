"""The DNSBL checker against a real BIND on loopback (tests/services): listings, error codes,
a zone that lists everything, a dead zone, a black-holed zone, RFC 5782 test entries, a
resolver that answers every query with a Spamhaus error code, the TTL cache, budgets, DQS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from providers.dnsbl import DnsblChecker, DqsKey, reversed_name
from reconciler.core.reputation import (
    AnswerKind,
    Verdict,
    ZoneHealth,
    compile_rules,
)
from specs.blocklists import ListingAction, ResolverAddress
from specs.model import ReputationPolicy
from tests.services.bind import BindServer, Blackhole, dnsbl_zone_text, zone_text

ZEN = "zen.spamhaus.org"
LISTINGS = {
    "192.0.2.10": "127.0.0.2",  # SBL
    "192.0.2.11": "127.0.0.4",  # XBL
    "192.0.2.12": "127.0.0.10",  # PBL
    "192.0.2.13": "127.255.255.254",  # an error answer for this name
    "192.0.2.14": ["127.0.0.3", "127.0.0.10"],  # CSS + PBL
}
DQS_KEY = "abcdefghijklmnopqrstuvwxyz"


def checker(server: BindServer | tuple[str, int], zones: list[Any], **options: Any) -> DnsblChecker:
    policy = ReputationPolicy.model_validate({"blocklists": zones})
    host, port = server.address if isinstance(server, BindServer) else server
    options.setdefault("timeout", 1.0)
    return DnsblChecker(compile_rules(policy), ResolverAddress(host, port), **options)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _check(c: DnsblChecker, ips: list[str]) -> Any:
    try:
        return await c.check(ips)
    finally:
        await c.aclose()


def test_reversed_names() -> None:
    assert reversed_name("192.0.2.10") == "10.2.0.192"
    assert reversed_name("2001:db8::1").startswith("1.0.0.0.0.0.0.0")
    assert reversed_name("2001:db8::1").endswith("8.b.d.0.1.0.0.2")


def test_spamhaus_codes_read_right(bind_server: BindServer) -> None:
    bind_server.set_zone(ZEN, dnsbl_zone_text(ZEN, LISTINGS))
    probes, verdicts = run(_check(checker(bind_server, [ZEN]), [*LISTINGS, "192.0.2.99"]))
    assert probes[ZEN].health is ZoneHealth.USABLE
    by_ip = {v.ip: v for v in verdicts}
    sbl = by_ip["192.0.2.10"].zones[0]
    assert (sbl.verdict, sbl.listing, sbl.action) == (Verdict.LISTED, "SBL", ListingAction.PAUSE)
    assert by_ip["192.0.2.11"].zones[0].listing == "XBL"
    pbl = by_ip["192.0.2.12"].zones[0]
    assert (pbl.listing, pbl.action) == ("PBL", ListingAction.REPORT)
    error = by_ip["192.0.2.13"]
    assert error.verdict is Verdict.UNKNOWN
    assert "127.255.255.254" in error.zones[0].reason
    assert by_ip["192.0.2.14"].zones[0].listing == "CSS"
    assert by_ip["192.0.2.99"].verdict is Verdict.NOT_LISTED


def test_unusable_zones_are_never_trusted(bind_server: BindServer) -> None:
    bind_server.set_zone(
        "everything.dnsbl.test", dnsbl_zone_text("everything.dnsbl.test", wildcard="127.0.0.2")
    )
    bind_server.set_zone("dead.dnsbl.test", zone_text("dead.dnsbl.test"))
    bind_server.set_zone(
        "errors.dnsbl.test",
        dnsbl_zone_text(
            "errors.dnsbl.test", rfc5782_test_entries=False, wildcard="127.255.255.254"
        ),
    )
    zones = ["everything.dnsbl.test", "dead.dnsbl.test", "errors.dnsbl.test"]
    probes, verdicts = run(_check(checker(bind_server, zones), ["192.0.2.10", "192.0.2.99"]))
    assert probes["everything.dnsbl.test"].health is ZoneHealth.LISTS_EVERYTHING
    assert probes["dead.dnsbl.test"].health is ZoneHealth.DEAD
    assert probes["errors.dnsbl.test"].health is ZoneHealth.ERRORS
    for verdict in verdicts:
        assert verdict.verdict is Verdict.UNKNOWN
        assert not verdict.listings
        assert all("unusable" in z.reason for z in verdict.zones)


def test_a_black_holed_zone_does_not_slow_the_others(
    bind_factory: Callable[..., BindServer], blackhole_dns: Blackhole
) -> None:
    resolver = bind_factory(recursion=True)
    resolver.set_zone(ZEN, dnsbl_zone_text(ZEN, LISTINGS))
    resolver.add_forward_zone("hole.dnsbl.test", *blackhole_dns.address)
    ips = [f"198.51.100.{i}" for i in range(1, 201)]

    async def scenario() -> tuple[float, float, Any, Any]:
        c = checker(resolver, [ZEN, "hole.dnsbl.test"], timeout=0.6, breaker_threshold=5)
        try:
            started = time.monotonic()
            probes = await c.probe()
            probe_time = time.monotonic() - started
            started = time.monotonic()
            answers = await c.lookup(ips)  # no probe verdict: asks the hole, breaker opens
            return probe_time, time.monotonic() - started, probes, (answers, c.stats())
        finally:
            await c.aclose()

    probe_time, lookup_time, probes, (answers, stats) = run(scenario())
    assert probes["hole.dnsbl.test"].health is ZoneHealth.UNREACHABLE
    assert probes[ZEN].usable
    assert probe_time < 3.0
    hole = [a for a in answers if a.zone == "hole.dnsbl.test"]
    assert all(a.kind is AnswerKind.UNUSABLE for a in hole)
    assert {a.kind for a in answers if a.zone == ZEN} == {AnswerKind.NXDOMAIN}
    assert lookup_time < 3.0
    assert stats["hole.dnsbl.test"].queries <= 2 + 64  # the probe, then nothing more


def test_circuit_breaker_opens_on_a_black_hole(blackhole_dns: Blackhole) -> None:
    ips = [f"198.51.100.{i}" for i in range(1, 101)]

    async def scenario() -> tuple[float, Any, Any]:
        c = checker(blackhole_dns.address, ["hole.dnsbl.test"], timeout=0.5, concurrency=8)
        try:
            started = time.monotonic()
            answers = await c.lookup(ips)
            return time.monotonic() - started, answers, c.stats()["hole.dnsbl.test"]
        finally:
            await c.aclose()

    elapsed, answers, stats = run(scenario())
    kinds = {a.kind for a in answers}
    assert kinds <= {AnswerKind.TIMEOUT, AnswerKind.CIRCUIT_OPEN}
    assert AnswerKind.CIRCUIT_OPEN in kinds
    assert stats.queries <= 8 + 5  # the first slots, then the breaker refuses the rest
    assert elapsed < 2.5  # not 100 / 8 x 0.5 s


def test_a_resolver_answering_spamhaus_errors_never_lists(bind_server: BindServer) -> None:
    # every name under the root answers 127.255.255.254: what Spamhaus does to public resolvers
    bind_server.set_zone(".", zone_text(".", ["* IN A 127.255.255.254"]))
    probes, verdicts = run(
        _check(checker(bind_server, [ZEN, "b.barracudacentral.org"]), list(LISTINGS))
    )
    assert probes[ZEN].health is ZoneHealth.ERRORS
    for verdict in verdicts:
        assert verdict.verdict is Verdict.UNKNOWN
        assert not verdict.listings


def test_answers_are_cached_for_their_ttl(bind_server: BindServer) -> None:
    bind_server.set_zone(ZEN, dnsbl_zone_text(ZEN, LISTINGS, ttl=300))
    now = [0.0]

    async def scenario() -> Any:
        c = checker(bind_server, [ZEN], monotonic=lambda: now[0])
        try:
            await c.lookup(["192.0.2.10", "192.0.2.99"])
            again = await c.lookup(["192.0.2.10", "192.0.2.99"])
            first = c.stats()[ZEN].queries
            now[0] = 301.0
            await c.lookup(["192.0.2.10"])
            return again, first, c.stats()[ZEN]
        finally:
            await c.aclose()

    again, first, stats = run(scenario())
    assert all(a.cached for a in again)
    assert first == 2
    assert stats.cache_hits == 2
    assert stats.queries == 3  # expired after its TTL


def test_daily_budget_is_respected(bind_server: BindServer) -> None:
    bind_server.set_zone("bl.dnsbl.test", dnsbl_zone_text("bl.dnsbl.test"))
    zone = {"zone": "bl.dnsbl.test", "daily_budget": 5}

    async def scenario() -> Any:
        c = checker(bind_server, [zone])
        try:
            return await c.lookup([f"198.51.100.{i}" for i in range(1, 9)]), c.stats()
        finally:
            await c.aclose()

    answers, stats = run(scenario())
    assert sum(a.kind is AnswerKind.BUDGET for a in answers) == 3
    assert stats["bl.dnsbl.test"].queries == 5


def test_dqs_key_goes_in_the_name_and_nowhere_else(bind_server: BindServer) -> None:
    zone = "zen.dq.spamhaus.net"
    listings = {
        "192.0.2.10": "127.0.0.2",
        "127.0.0.2": "127.0.0.2",
        "192.0.2.20": "127.255.255.251",
    }
    records = []
    for ip, code in listings.items():
        records.append(f"{'.'.join(reversed(ip.split('.')))}.{DQS_KEY} IN A {code}")
    bind_server.set_zone(zone, zone_text(zone, records))
    key = DqsKey(DQS_KEY)
    assert DQS_KEY not in repr(key)

    probes, verdicts = run(
        _check(checker(bind_server, [zone], dqs_key=key, dqs_allowed=True), list(listings))
    )
    assert probes[zone].usable
    by_ip = {v.ip: v for v in verdicts}
    assert by_ip["192.0.2.10"].verdict is Verdict.LISTED
    rejected = by_ip["192.0.2.20"]
    assert rejected.verdict is Verdict.UNKNOWN
    assert "DQS key" in rejected.zones[0].reason
    # a resolver named only by the spec never receives the key
    _, refused = run(_check(checker(bind_server, [zone], dqs_key=key), ["192.0.2.10"]))
    assert refused[0].verdict is Verdict.UNKNOWN
    assert "operator" in refused[0].zones[0].reason
    for verdict in verdicts + refused:
        for z in verdict.zones:
            assert DQS_KEY not in z.reason


def test_public_resolvers_are_never_asked() -> None:
    policy = ReputationPolicy.model_validate({"blocklists": [ZEN]})
    c = DnsblChecker(compile_rules(policy), ResolverAddress("8.8.8.8", 53))
    _, verdicts = run(_check(c, ["192.0.2.10"]))
    assert verdicts[0].verdict is Verdict.UNKNOWN
    assert "public resolver" in verdicts[0].zones[0].reason
    assert c.stats()[ZEN].queries == 0


@pytest.mark.parametrize("text", ["8.8.8.8", "1.1.1.1:53", "[2606:4700:4700::1111]:53"])
def test_spec_refuses_public_resolvers(text: str) -> None:
    with pytest.raises(ValueError, match="public resolver"):
        ReputationPolicy.model_validate({"resolver": text})
