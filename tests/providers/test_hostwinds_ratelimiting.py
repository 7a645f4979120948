"""The token bucket, on fake time."""

from __future__ import annotations

import asyncio
import functools

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.hostwinds.ratelimiting import TokenBucket
from tests.fakes.clocks import FakeClock, VirtualClock

pytestmark = pytest.mark.anyio


async def test_burst_is_free_then_requests_are_spaced_by_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 2, monotonic=clock.monotonic, sleep=clock.sleep)
    stamps = []
    for _ in range(6):
        await bucket.acquire()
        stamps.append(clock.monotonic())
    assert stamps == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


async def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 3, monotonic=clock.monotonic, sleep=clock.sleep)
    for _ in range(3):
        assert await bucket.acquire() == 0.0
    clock.advance(100.0)
    assert bucket.available == pytest.approx(3.0)
    for _ in range(3):
        assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(1.0)


async def test_concurrent_waiters_are_served_in_arrival_order_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 1, monotonic=clock.monotonic, sleep=clock.sleep)
    order: list[int] = []

    async def worker(n: int) -> None:
        await bucket.acquire()
        order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(worker, n)
    assert order == [0, 1, 2, 3, 4]
    # five requests at 4/s with a burst of one take at least a second
    assert clock.monotonic() == pytest.approx(1.0)


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1.0, 0)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50.0),
    burst=st.integers(min_value=1, max_value=10),
    n=st.integers(min_value=1, max_value=60),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, n: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, monotonic=clock.monotonic, sleep=clock.sleep)

    async def run() -> None:
        for _ in range(n):
            await bucket.acquire()

    anyio.run(run)
    elapsed = clock.monotonic()
    assert n <= burst + rate * elapsed + 1e-6
    # and it is not slower than needed
    assert elapsed <= max(0.0, (n - burst) / rate) + 1e-6


def test_a_deferrable_read_lets_calls_that_arrive_later_go_first() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(10.0, 1, monotonic=clock.monotonic, sleep=clock.sleep)
    order: list[tuple[str, float]] = []

    async def call(what: str, *, at: float, deferrable: bool = False) -> None:
        await clock.sleep(at)
        await bucket.acquire(deferrable=deferrable)
        order.append((what, round(clock.monotonic(), 6)))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(call, "m0", at=0.0))
            tg.start_soon(functools.partial(call, "m1", at=0.0))
            tg.start_soon(functools.partial(call, "read", at=0.01, deferrable=True))
            tg.start_soon(functools.partial(call, "m2", at=0.15))

    asyncio.run(clock.run(main()))
    # the read came before m2 but waited for it; then it went one token later
    assert order == [("m0", 0.0), ("m1", 0.1), ("m2", 0.2), ("read", 0.3)]


def test_a_deferrable_read_waits_at_most_the_limit_then_queues() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(10.0, 1, defer_limit=0.35, monotonic=clock.monotonic, sleep=clock.sleep)
    stamps: dict[str, float] = {}

    async def mutations() -> None:
        for n in range(20):  # a call every token: the queue never empties
            await bucket.acquire()
            stamps[f"m{n}"] = clock.monotonic()

    async def read() -> None:
        await clock.sleep(0.05)
        await bucket.acquire(deferrable=True)
        stamps["read"] = clock.monotonic()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(mutations)
            tg.start_soon(read)

    asyncio.run(clock.run(main()))
    # deferred 0.35 s, then reserved behind the one call already queued
    assert stamps["read"] == pytest.approx(0.5)
    assert stamps["m19"] == pytest.approx(2.0)


async def test_a_deferrable_read_with_a_token_free_goes_at_once() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 2, monotonic=clock.monotonic, sleep=clock.sleep)
    assert await bucket.acquire(deferrable=True) == 0.0
    assert await bucket.acquire(deferrable=True) == 0.0
    assert clock.monotonic() == 0.0
    with pytest.raises(ValueError, match="defer_limit"):
        TokenBucket(1.0, defer_limit=-1.0)
