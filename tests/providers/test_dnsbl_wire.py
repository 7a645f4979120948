"""The stub resolver's wire handling, against a hostile loopback "resolver" (a UDP socket this
test drives): forged and garbage datagrams are ignored, a lost datagram is sent again, the
small parser agrees with dnspython."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.dnsbl.querying import QueryFailedError, StubResolver, encode_name, parse_answer

NAME = "10.2.0.192.zen.spamhaus.org"
QUESTION = encode_name(NAME) + b"\x00\x01\x00\x01"


def response(name: str, *codes: str, rcode: int = 0, qid: int = 1, ttl: int = 60) -> bytes:
    query = dns.message.make_query(name + ".", "A")
    query.id = qid
    answer = dns.message.make_response(query)
    answer.set_rcode(dns.rcode.Rcode(rcode))
    if codes:
        answer.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", *codes))
    else:
        answer.authority.append(
            dns.rrset.from_text(
                "zen.spamhaus.org.", 900, "IN", "SOA", "ns. host. 1 3600 600 86400 120"
            )
        )
    return answer.to_wire()


def test_parser_reads_answers_like_dnspython() -> None:
    _, truncated, answer = parse_answer(response(NAME, "127.0.0.2", "127.0.0.10"), QUESTION)
    assert not truncated
    assert sorted(answer.addresses) == ["127.0.0.10", "127.0.0.2"]
    assert answer.ttl == 60
    _, _, negative = parse_answer(response(NAME, rcode=3), QUESTION)
    assert negative.rcode == 3
    assert negative.addresses == ()
    assert negative.ttl == 120
    with pytest.raises(LookupError):
        parse_answer(response("11.2.0.192.zen.spamhaus.org", "127.0.0.2"), QUESTION)


@given(st.binary(max_size=300))
def test_parser_never_crashes_on_garbage(data: bytes) -> None:
    with contextlib.suppress(ValueError, LookupError, IndexError, struct.error):
        parse_answer(data, QUESTION)


def test_pointer_loops_are_refused() -> None:
    header = bytes.fromhex("00018180000100010000 0000".replace(" ", ""))
    looped = header + QUESTION + b"\xc0\x0c"[:0] + b"\x3f" * 200
    with pytest.raises((ValueError, IndexError)):
        parse_answer(looped, QUESTION)


class HostileResolver(asyncio.DatagramProtocol):
    """Answers each query with a forged answer (another name), then garbage with the right
    id, then (unless ``drop_first``) the real answer."""

    def __init__(self, drop_first: bool) -> None:
        self.drop_first = drop_first
        self.seen = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen += 1
        qid = int.from_bytes(data[:2], "big")
        if self.drop_first and self.seen == 1:
            return
        self.transport.sendto(response("99.2.0.192.zen.spamhaus.org", "127.0.0.2", qid=qid), addr)
        self.transport.sendto(data[:2] + b"\x81\x80garbage", addr)
        self.transport.sendto(response(NAME, qid=qid, rcode=3), addr)


@pytest.mark.parametrize("drop_first", [False, True])
def test_forged_and_garbage_answers_are_ignored(drop_first: bool) -> None:
    async def scenario() -> tuple[Any, int]:
        loop = asyncio.get_running_loop()
        transport, hostile = await loop.create_datagram_endpoint(
            lambda: HostileResolver(drop_first), local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        stub = StubResolver("127.0.0.1", port, timeout=1.0)
        try:
            return await stub.query_a(NAME), hostile.seen
        finally:
            await stub.aclose()
            transport.close()

    answer, seen = asyncio.run(scenario())
    assert answer.rcode == 3
    assert answer.addresses == ()
    assert seen == (2 if drop_first else 1)  # a lost datagram is sent once more


def test_silence_is_a_timeout() -> None:
    async def scenario() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        stub = StubResolver("127.0.0.1", sock.getsockname()[1], timeout=0.3)
        try:
            with pytest.raises(QueryFailedError) as caught:
                await stub.query_a(NAME)
            assert caught.value.kind == "timeout"
            assert NAME not in str(caught.value)
        finally:
            await stub.aclose()
            sock.close()

    asyncio.run(scenario())


def test_circuit_breaker_life_cycle() -> None:
    from providers.dnsbl import CircuitBreaker

    now = [0.0]
    breaker = CircuitBreaker(threshold=3, cooldown=10.0, monotonic=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert not breaker.is_open
    breaker.failure()
    assert breaker.is_open
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one
    breaker.failure()  # the trial failed: open again for a full cooldown
    assert not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open
    assert breaker.allow()
    assert breaker.allow()
    assert breaker.opened == 2


def test_daily_budget_resets_each_day() -> None:
    from datetime import date

    from providers.dnsbl import DailyBudget

    budget = DailyBudget(2)
    day = date(2026, 11, 23)
    assert budget.take(day)
    assert budget.take(day)
    assert not budget.take(day)
    assert budget.take(date(2026, 11, 24))
    assert DailyBudget(None).take(day)


def test_slots_bound_the_holders_hand_over_in_order_and_survive_cancellation() -> None:
    """The hot-path semaphore: never more holders than slots, waiters served first come first
    served, and a waiter cancelled (before or after it was handed a slot) leaks nothing."""
    from providers.dnsbl.querying import Slots

    async def scenario() -> None:
        slots = Slots(2)
        holding = 0
        peak = 0
        order: list[int] = []

        async def hold(index: int, delay: float) -> None:
            nonlocal holding, peak
            async with slots:
                holding += 1
                peak = max(peak, holding)
                order.append(index)
                await asyncio.sleep(delay)
                holding -= 1

        await asyncio.gather(*(hold(i, 0.001 * (i % 3)) for i in range(20)))
        assert peak == 2
        assert order == sorted(order)  # FIFO: no barging
        assert slots.free == 2
        # a waiter cancelled while it waits
        async with slots, slots:
            waiting = asyncio.ensure_future(hold(99, 0))
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert slots.free == 2
        # a waiter handed a slot and cancelled before it runs gives the slot back
        async with slots:
            await slots.__aenter__()
            handed = asyncio.ensure_future(hold(100, 0))
            await asyncio.sleep(0)
            await slots.__aexit__(None, None, None)  # hands the slot to `handed`
            handed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await handed
        assert slots.free == 2
        with pytest.raises(ValueError, match="at least one slot"):
            Slots(0)

    asyncio.run(scenario())


class TruncatingResolver(asyncio.DatagramProtocol):
    """Answers every UDP query with an empty, truncated (TC) answer: ask again over TCP."""

    def __init__(self) -> None:
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = dns.message.make_response(dns.message.from_wire(data))
        answer.flags |= dns.flags.TC
        self.transport.sendto(answer.to_wire(), addr)


async def _tcp_dnsbl(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The TCP side: 192.0.2.10 listed (127.0.0.2), the rest SERVFAIL for .11, NXDOMAIN else."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            size = int.from_bytes(await reader.readexactly(2), "big")
            query = dns.message.from_wire(await reader.readexactly(size))
            name = query.question[0].name.to_text()
            answer = dns.message.make_response(query)
            if name.startswith("10.2.0.192."):
                answer.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "127.0.0.2"))
            elif name.startswith("11.2.0.192."):
                answer.set_rcode(dns.rcode.SERVFAIL)
            else:
                answer.set_rcode(dns.rcode.NXDOMAIN)
            wire = answer.to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
    writer.close()


def test_a_truncated_answer_is_asked_again_over_tcp_by_the_bulk_look_up() -> None:
    """The look-up path driven by callbacks (no coroutine per query) reads a truncated UDP
    answer again over TCP and reads its rcode like query_a does."""
    from providers.dnsbl import DnsblChecker
    from reconciler.core.reputation import AnswerKind, compile_rules
    from specs.blocklists import ResolverAddress
    from specs.model import ReputationPolicy

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            TruncatingResolver, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        server = await asyncio.start_server(_tcp_dnsbl, "127.0.0.1", port)
        policy = ReputationPolicy.model_validate({"blocklists": ["bl.dnsbl.test"]})
        checker = DnsblChecker(
            compile_rules(policy), ResolverAddress("127.0.0.1", port), timeout=2.0
        )
        try:
            return await checker.lookup(["192.0.2.10", "192.0.2.11", "192.0.2.12"])
        finally:
            await checker.aclose()
            server.close()
            await server.wait_closed()
            transport.close()

    answers = {a.ip: a for a in asyncio.run(scenario())}
    assert answers["192.0.2.10"].kind is AnswerKind.ADDRESSES
    assert answers["192.0.2.10"].addresses == ("127.0.0.2",)
    assert answers["192.0.2.11"].kind is AnswerKind.SERVFAIL
    assert answers["192.0.2.12"].kind is AnswerKind.NXDOMAIN
